//go:build unix

package cpu

import (
	"fmt"
	"math/rand"
	"syscall"
	"testing"
	"time"

	"github.com/ddpmgo/ddpm/cpu/internal/vec"
	"github.com/ddpmgo/ddpm/ops"
)

// cpuTime is the user+system CPU time of the process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// timeFLOPs runs f b.N times and reports GFLOP/s (wall clock, all cores) and
// GFLOP/cpu-s (per core second of CPU time: the efficiency of the code, which other
// processes on a shared machine do not distort as much).
func timeFLOPs(b *testing.B, flops float64, f func()) {
	f() // warm the scratch
	b.ResetTimer()
	c0 := cpuTime()
	for i := 0; i < b.N; i++ {
		f()
	}
	cpu := cpuTime() - c0
	b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	b.ReportMetric(flops*float64(b.N)/cpu.Seconds()/1e9, "GFLOP/cpu-s")
}

// BenchmarkConv2D times the 3×3 stride-1 convolutions of a CIFAR-size U-Net at batch 64.
//
// Napkin maths: FLOPs = 2·N·Cout·OH·OW·Cin·K² is the same 4.83 GFLOP for each of the
// three shapes (64→64 @32², 128→128 @16², 256→256 @8²); the backward pass is twice that
// (backward-data and backward-weight). Peak FP32 on this machine is 2 cores × 2.6 GHz ×
// 2 AVX-512 FMA units × 16 lanes × 2 = 333 GFLOP/s; OpenBLAS's SkylakeX sgemm reaches
// ~140 GFLOP/s on one core for large square GEMMs, ~110–150 on the column panels Conv2D
// multiplies (M = Cout, N ≈ 1024 columns of one or several samples, K = 9·Cin). So a
// forward pass should take ≈ 4.83/250 ≈ 20 ms on two idle cores plus the im2col traffic
// (N·9·Cin·OH·OW·4 B = 151 MB at 64→64 @32², written once and read once by the GEMM: a
// few ms).
func BenchmarkConv2D(b *testing.B) {
	be := New()
	for _, s := range []ops.ConvShape{
		{N: 64, Cin: 64, H: 32, W: 32, Cout: 64, K: 3, Stride: 1, Pad: 1},
		{N: 64, Cin: 128, H: 16, W: 16, Cout: 128, K: 3, Stride: 1, Pad: 1},
		{N: 64, Cin: 256, H: 8, W: 8, Cout: 256, K: 3, Stride: 1, Pad: 1},
		{N: 64, Cin: 128, H: 16, W: 16, Cout: 128, K: 1, Stride: 1, Pad: 0},
		{N: 64, Cin: 512, H: 8, W: 8, Cout: 256, K: 3, Stride: 1, Pad: 1}, // the up path's concatenations
	} {
		x := be.Alloc(s.N * s.Cin * s.H * s.W)
		w := be.Alloc(s.Cout * s.Cin * s.K * s.K)
		bias := be.Alloc(s.Cout)
		y := be.Alloc(s.N * s.Cout * s.OutH() * s.OutW())
		dx, dw, db := be.Alloc(x.Len()), be.Alloc(w.Len()), be.Alloc(s.Cout)
		be.Fill(x, 0.5)
		be.Fill(w, 0.01)
		name := fmt.Sprintf("%dx%dx%dx%d->%d/k%d", s.N, s.Cin, s.H, s.W, s.Cout, s.K)
		b.Run("fwd/"+name, func(b *testing.B) {
			timeFLOPs(b, float64(s.FLOPs()), func() { be.Conv2D(s, x, w, bias, y) })
		})
		b.Run("bwd/"+name, func(b *testing.B) {
			timeFLOPs(b, 2*float64(s.FLOPs()), func() { be.Conv2DBackward(s, x, w, y, dx, dw, db) })
		})
	}
}

// BenchmarkAttention: the self-attention of the celeba32 U-Net's middle block (8×8 pixels, L = 64, 256 channels in
// 32 heads of 8: 4·N·heads·L²·D = 0.27 GFLOP forward in two GEMMs per head, and N·heads·L² = 8.4 M exponentials,
// which cost more) and a 16×16 one-head layer (L = 256, C = 256: 4.3 GFLOP, 4.2 M exponentials) at batch 64, at
// fp32 and at bf16 where the CPU has it; random inputs. The backward pass is four GEMMs a head (twice the FLOPs).
//
//	go test ./cpu/ -run '^$' -bench Attention
func BenchmarkAttention(b *testing.B) {
	for _, s := range []ops.AttnShape{{N: 64, L: 64, Heads: 32, D: 8}, {N: 64, L: 256, Heads: 1, D: 256}} {
		for _, prec := range []ops.Precision{ops.FP32, ops.BF16} {
			be := New()
			if err := be.SetPrecision(prec); err != nil {
				b.Logf("%s: not run: %v", prec, err) // no bf16 on this CPU
				continue
			}
			n := s.N * s.L * s.Heads * s.D
			r := rand.New(rand.NewSource(1))
			qs := make([]float32, n)
			for i := range qs {
				qs[i] = float32(r.NormFloat64())
			}
			q, o, p, dq := be.Alloc(n), be.Alloc(n), be.Alloc(s.N*s.Heads*s.L*s.L), be.Alloc(n)
			be.Upload(q, qs)
			flops := 4 * float64(s.N*s.Heads) * float64(s.L*s.L) * float64(s.D)
			name := fmt.Sprintf("L%d-heads%d-D%d/%s", s.L, s.Heads, s.D, prec)
			b.Run(name+"/fwd", func(b *testing.B) { timeFLOPs(b, flops, func() { be.Attention(s, q, q, q, o, p) }) })
			b.Run(name+"/bwd", func(b *testing.B) {
				timeFLOPs(b, 2*flops, func() { be.AttentionBackward(s, q, q, q, p, o, dq, dq, dq) })
			})
		}
	}
}

// BenchmarkSiLU: 64·64·32·32 = 4.2 M elements, one exp each.
func BenchmarkSiLU(b *testing.B) {
	be := New()
	x := be.Alloc(64 * 64 * 32 * 32)
	y := be.Alloc(x.Len())
	b.SetBytes(int64(8 * x.Len()))
	for i := 0; i < b.N; i++ {
		be.SiLU(x, y)
	}
}

// BenchmarkGroupNorm times the group norm family on the celeba32 U-Net's largest
// shapes at batch 64 (8.4 M and 4.2 M elements), with the AVX-512 kernels (vec) and
// the scalar loops (scalar). cpu-ms/op is the CPU time of all workers per op, steadier
// than the wall clock on a shared machine.
//
// Napkin maths: the forward reads x from memory once (its second and third passes
// find a group of 4–16 KiB in cache) and writes y: 8 B per element (12 with the read
// for ownership of y's lines), 100 MB at the first shape; the backward reads x and dy
// and updates dx: 16 B per element, 134 MB (GroupNormSiLUBackward keeps its gn in
// per-worker scratch, in cache). At the ~25 GB/s this 2-core VM reaches that is ~4 and
// ~5.5 ms; the kernels' arithmetic is ~1 (forward) to ~3 (SiLU backward) cycles per
// element per core, 2–5 ms, partly hidden behind the memory traffic by the prefetches.
// The scalar loops take about one cycle per element per pass. Measured at the first
// shape (wall, load average 1.6 from other work): fwd 4.0, fwd-silu 4.0, bwd 6.0,
// bwd-silu 8.0 ms with vec; 10.4, 13.0, 15.7 and 19.8 ms scalar.
func BenchmarkGroupNorm(b *testing.B) {
	for _, s := range []ops.NormShape{
		{N: 64, C: 128, HW: 1024, G: 32, Eps: 1e-5},
		{N: 64, C: 256, HW: 256, G: 32, Eps: 1e-5},
	} {
		be := New()
		n := s.N * s.C * s.HW
		x, y, dy, dx := be.Alloc(n), be.Alloc(n), be.Alloc(n), be.Alloc(n)
		gamma, beta, dg, db, st := be.Alloc(s.C), be.Alloc(s.C), be.Alloc(s.C), be.Alloc(s.C), be.Alloc(2*s.N*s.G)
		r := rand.New(rand.NewSource(1))
		for _, d := range [][]float32{Data[float32](x), Data[float32](dy), Data[float32](gamma)} {
			for i := range d {
				d[i] = float32(r.NormFloat64())
			}
		}
		for _, path := range []string{"vec", "scalar"} {
			if path == "vec" && !vec.Available {
				continue
			}
			for _, op := range []struct {
				name  string
				bytes int
				f     func()
			}{
				{"fwd", 8, func() { be.GroupNorm(s, x, gamma, beta, y, st) }},
				{"fwd-silu", 8, func() { be.GroupNormSiLU(s, x, gamma, beta, y, st) }},
				{"bwd", 16, func() { be.GroupNormBackward(s, x, gamma, st, dy, dx, dg, db) }},
				{"bwd-silu", 16, func() { be.GroupNormSiLUBackward(s, x, gamma, beta, st, dy, dx, dg, db) }},
			} {
				b.Run(fmt.Sprintf("%s/%s/%dx%dx%d/G%d", op.name, path, s.N, s.C, s.HW, s.G), func(b *testing.B) {
					defer func(v bool) { useAVX512GroupNorm = v }(useAVX512GroupNorm)
					useAVX512GroupNorm = path == "vec"
					b.SetBytes(int64(op.bytes * n))
					op.f()
					b.ResetTimer()
					c0 := cpuTime()
					for range b.N {
						op.f()
					}
					b.ReportMetric(float64(cpuTime()-c0)/1e6/float64(b.N), "cpu-ms/op")
				})
			}
		}
	}
}
