//go:build cuda

package cuda

import (
	"fmt"
	"testing"

	"github.com/ddpmgo/ddpm/ops"
)

// Device benchmarks of the kernel families of conv2d.cu, groupnorm.cu, linear.cu, attention.cu and the layout
// kernels, at U-Net shapes. Each reports its rate from the work counts of flops_test.go: GFLOP/s for the GEMM-shaped
// ops, GB/s (of the minimum traffic) for the memory-bound ones. Run on a GPU host with
//
//	go test -tags cuda -run '^$' -bench . ./cuda/

func benchBackend(b *testing.B) *Backend {
	b.Helper()
	d, err := Open("cuda")
	if err != nil {
		b.Fatal(err)
	}
	be, err := NewBackend(d)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		be.FreeScratch()
		be.Close()
		d.Close()
	})
	return be
}

// randBuf uploads n values in [-1, 1) from a fixed LCG (the values do not matter for speed, only that they are finite).
func randBuf(be *Backend, n int) ops.Buf {
	v := make([]float32, n)
	x := uint32(12345)
	for i := range v {
		x = x*1664525 + 1013904223
		v[i] = float32(x>>8)/float32(1<<23) - 1
	}
	buf := be.Alloc(n)
	be.Upload(buf, v)
	return buf
}

// run times f over b.N iterations (after one warm-up call) and reports work/second in unit (1e9 per second).
func run(b *testing.B, be *Backend, work float64, unit string, f func()) {
	f()
	if err := be.Sync(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		f()
	}
	if err := be.Sync(); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(work*float64(b.N)/b.Elapsed().Seconds()/1e9, unit)
}

var benchConvShapes = []ops.ConvShape{
	{N: 64, Cin: 128, H: 32, W: 32, Cout: 128, K: 3, Stride: 1, Pad: 1},
	{N: 64, Cin: 256, H: 16, W: 16, Cout: 256, K: 3, Stride: 1, Pad: 1},
	{N: 64, Cin: 128, H: 32, W: 32, Cout: 128, K: 3, Stride: 2, Pad: 1},
	{N: 64, Cin: 256, H: 16, W: 16, Cout: 128, K: 1, Stride: 1, Pad: 0},
	{N: 64, Cin: 3, H: 32, W: 32, Cout: 128, K: 3, Stride: 1, Pad: 1},
}

func BenchmarkConv2D(b *testing.B) {
	for _, tc := range []bool{false, true} {
		for _, s := range benchConvShapes {
			name := fmt.Sprintf("tf32=%v/%dx%dx%dx%d->%d/k%ds%d", tc, s.N, s.Cin, s.H, s.W, s.Cout, s.K, s.Stride)
			b.Run(name, func(b *testing.B) {
				be := benchBackend(b)
				be.SetTensorCores(tc)
				xn, wn, yn := s.N*s.Cin*s.H*s.W, s.Cout*s.Cin*s.K*s.K, s.N*s.Cout*s.OutH()*s.OutW()
				x, w, bias, y := randBuf(be, xn), randBuf(be, wn), randBuf(be, s.Cout), be.Alloc(yn)
				dy, dx, dw := randBuf(be, yn), be.Alloc(xn), be.Alloc(wn)
				b.Run("forward", func(b *testing.B) {
					run(b, be, convFLOPs(s), "GFLOP/s", func() { be.Conv2D(s, x, w, bias, y) })
				})
				b.Run("backward-data", func(b *testing.B) {
					run(b, be, convFLOPs(s), "GFLOP/s", func() { be.Conv2DBackward(s, x, w, dy, dx, nil, nil) })
				})
				b.Run("backward-weight", func(b *testing.B) {
					run(b, be, convFLOPs(s), "GFLOP/s", func() { be.Conv2DBackward(s, x, w, dy, nil, dw, nil) })
				})
			})
		}
	}
}

func BenchmarkGroupNorm(b *testing.B) {
	for _, s := range []ops.NormShape{{N: 64, C: 128, HW: 1024, G: 32, Eps: 1e-5}, {N: 64, C: 256, HW: 64, G: 32, Eps: 1e-5}} {
		b.Run(fmt.Sprintf("%dx%dx%d/G%d", s.N, s.C, s.HW, s.G), func(b *testing.B) {
			be := benchBackend(b)
			n := s.N * s.C * s.HW
			x, gamma, beta, y, stats := randBuf(be, n), randBuf(be, s.C), randBuf(be, s.C), be.Alloc(n), be.Alloc(2*s.N*s.G)
			dy, dx, dg, db := randBuf(be, n), be.Alloc(n), be.Alloc(s.C), be.Alloc(s.C)
			b.Run("forward", func(b *testing.B) {
				run(b, be, gnBytes(s, false), "GB/s", func() { be.GroupNorm(s, x, gamma, beta, y, stats) })
			})
			b.Run("backward", func(b *testing.B) {
				run(b, be, gnBytes(s, true), "GB/s", func() { be.GroupNormBackward(s, x, gamma, stats, dy, dx, dg, db) })
			})
		})
	}
}

func BenchmarkLinear(b *testing.B) {
	for _, sh := range [][3]int{{64, 128, 512}, {64, 512, 512}, {4096, 512, 512}} {
		n, in, out := sh[0], sh[1], sh[2]
		b.Run(fmt.Sprintf("%dx%d->%d", n, in, out), func(b *testing.B) {
			be := benchBackend(b)
			x, w, bias, y := randBuf(be, n*in), randBuf(be, out*in), randBuf(be, out), be.Alloc(n*out)
			dy, dx, dw, db := randBuf(be, n*out), be.Alloc(n*in), be.Alloc(out*in), be.Alloc(out)
			b.Run("forward", func(b *testing.B) {
				run(b, be, linearFLOPs(n, in, out), "GFLOP/s", func() { be.Linear(n, in, out, x, w, bias, y) })
			})
			b.Run("backward", func(b *testing.B) {
				run(b, be, 2*linearFLOPs(n, in, out), "GFLOP/s", func() { be.LinearBackward(n, in, out, x, w, dy, dx, dw, db) })
			})
		})
	}
}

func BenchmarkAttention(b *testing.B) {
	for _, s := range []ops.AttnShape{{N: 64, L: 256, Heads: 4, D: 64}, {N: 64, L: 64, Heads: 4, D: 64}} {
		b.Run(fmt.Sprintf("%+v", s), func(b *testing.B) {
			be := benchBackend(b)
			n := s.N * s.L * s.Heads * s.D
			q, k, v, o, p := randBuf(be, n), randBuf(be, n), randBuf(be, n), be.Alloc(n), be.Alloc(s.N*s.Heads*s.L*s.L)
			do, dq, dk, dv := randBuf(be, n), be.Alloc(n), be.Alloc(n), be.Alloc(n)
			b.Run("forward", func(b *testing.B) {
				run(b, be, attnFLOPs(s, false), "GFLOP/s", func() { be.Attention(s, q, k, v, o, p) })
			})
			b.Run("backward", func(b *testing.B) {
				run(b, be, attnFLOPs(s, true), "GFLOP/s", func() { be.AttentionBackward(s, q, k, v, p, do, dq, dk, dv) })
			})
		})
	}
}

func BenchmarkLayout(b *testing.B) {
	be := benchBackend(b)
	const n, c, hw = 64, 128, 1024
	x, y := randBuf(be, n*c*hw), be.Alloc(n*c*hw)
	a2, y2 := randBuf(be, n*c*hw), be.Alloc(2*n*c*hw)
	up := be.Alloc(4 * n * c * hw)
	t, emb := randBuf(be, n), be.Alloc(n*128)
	b.Run("Upsample2x", func(b *testing.B) {
		run(b, be, moveBytes(n*c*hw, 4*n*c*hw), "GB/s", func() { be.Upsample2x(n*c, 32, 32, x, up) })
	})
	b.Run("Upsample2xBackward", func(b *testing.B) {
		run(b, be, moveBytes(4*n*c*hw+n*c*hw, n*c*hw), "GB/s", func() { be.Upsample2xBackward(n*c, 32, 32, up, y) })
	})
	b.Run("Concat", func(b *testing.B) {
		run(b, be, moveBytes(2*n*c*hw, 2*n*c*hw), "GB/s", func() { be.Concat(n, c, c, hw, x, a2, y2) })
	})
	b.Run("Transpose", func(b *testing.B) {
		run(b, be, moveBytes(n*c*hw, n*c*hw), "GB/s", func() { be.Transpose(n, c, hw, x, y) })
	})
	b.Run("Dropout", func(b *testing.B) {
		run(b, be, moveBytes(n*c*hw, n*c*hw), "GB/s", func() { be.Dropout(0.1, 7, 0, x, y) })
	})
	b.Run("TimestepEmbedding", func(b *testing.B) {
		run(b, be, moveBytes(n, n*128), "GB/s", func() { be.TimestepEmbedding(ops.EmbedShape{N: n, Dim: 128, FlipSinToCos: true}, t, emb) })
	})
}
