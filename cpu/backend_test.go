package cpu

import (
	"math"
	"math/rand"
	"runtime"
	"strings"
	"testing"

	"github.com/ddpmgo/ddpm/ops"
)

func TestGemmMatchesGoLoops(t *testing.T) {
	r := rand.New(rand.NewSource(7))
	for _, c := range []struct {
		ta, tb  bool
		m, n, k int
	}{{false, false, 5, 7, 3}, {true, false, 4, 9, 6}, {false, true, 8, 3, 5}, {true, true, 6, 6, 11}, {false, false, 1, 1, 1}} {
		ra, ca := c.m, c.k
		if c.ta {
			ra, ca = c.k, c.m
		}
		rb, cb := c.k, c.n
		if c.tb {
			rb, cb = c.n, c.k
		}
		lda, ldb, ldc := ca+2, cb+1, c.n+3 // strides wider than the rows
		a, b := randF64(r, (ra-1)*lda+ca), randF64(r, (rb-1)*ldb+cb)
		c1, c2 := randF64(r, (c.m-1)*ldc+c.n), make([]float64, (c.m-1)*ldc+c.n)
		copy(c2, c1)
		gemm(c.ta, c.tb, c.m, c.n, c.k, 0.7, a, lda, b, ldb, 0.3, c1, ldc)
		gemmGo(c.ta, c.tb, c.m, c.n, c.k, 0.7, a, lda, b, ldb, 0.3, c2, ldc)
		expectClose(t, "gemm vs gemmGo ("+blasName+")", c1, c2, 1e-13)
	}
}

// TestDeterministicAcrossWorkers: the reductions over the batch use fixed chunks, so
// 1, 2 and 3 goroutines give the same bits, and so do repeated runs; with the
// convolution on im2col and on the shifted-GEMM path.
func TestDeterministicAcrossWorkers(t *testing.T) {
	t.Run("im2col", testDeterministicAcrossWorkers)
	t.Run("shifted", func(t *testing.T) { withShiftMin(1, func() { testDeterministicAcrossWorkers(t) }) })
}

func testDeterministicAcrossWorkers(t *testing.T) {
	s := ops.ConvShape{N: 7, Cin: 8, H: 9, W: 9, Cout: 6, K: 3, Stride: 1, Pad: 1}
	ns := ops.NormShape{N: 5, C: 12, HW: 49, G: 4, Eps: 1e-5}
	r := rand.New(rand.NewSource(8))
	host := func(n int) []float32 {
		d := make([]float32, n)
		for i := range d {
			d[i] = float32(r.NormFloat64())
		}
		return d
	}
	x, w, dy := host(s.N*s.Cin*s.H*s.W), host(s.Cout*s.Cin*9), host(s.N*s.Cout*81)
	big := host(200001)
	gx, gdy := host(ns.N*ns.C*ns.HW), host(ns.N*ns.C*ns.HW)
	run := func(workers int) [][]float32 {
		be := New()
		be.workers = workers
		in := func(d []float32) ops.Buf { b := be.Alloc(len(d)); be.Upload(b, d); return b }
		dx, dw, db, out := be.Alloc(len(x)), be.Alloc(len(w)), be.Alloc(s.Cout), be.Alloc(2)
		be.Conv2DBackward(s, in(x), in(w), in(dy), dx, dw, db)
		cy := be.Alloc(len(dy))
		be.Conv2D(s, in(x), in(w), db, cy)
		be.SumSquares(in(big), be.Slice(out, 0, 1))
		be.MSE(in(big), in(make([]float32, len(big))), be.Slice(out, 1, 1))
		gy, st, gdx, dg, dbeta := be.Alloc(len(gx)), be.Alloc(2*ns.N*ns.G), be.Alloc(len(gx)), be.Alloc(ns.C), be.Alloc(ns.C)
		g, beta := be.Alloc(ns.C), be.Alloc(ns.C)
		be.Fill(g, 1.5)
		be.GroupNorm(ns, in(gx), g, beta, gy, st)
		be.GroupNormBackward(ns, in(gx), g, st, in(gdy), gdx, dg, dbeta)
		// SiLU's vector kernel runs every element the same way wherever a worker's range starts.
		sy, sdx := be.Alloc(len(big)), be.Alloc(len(big))
		be.SiLU(in(big), sy)
		be.SiLUBackward(in(big), sy, sdx)
		var res [][]float32
		for _, b := range []ops.Buf{dx, dw, db, cy, out, gy, gdx, dg, dbeta, sy, sdx} {
			res = append(res, append([]float32(nil), Data[float32](b)...))
		}
		return res
	}
	want := run(1)
	for _, workers := range []int{1, 2, 3} {
		got := run(workers)
		for i := range want {
			for j := range want[i] {
				if math.Float32bits(got[i][j]) != math.Float32bits(want[i][j]) {
					t.Fatalf("workers=%d: result %d element %d = %g, with 1 worker %g", workers, i, j, got[i][j], want[i][j])
				}
			}
		}
	}
}

// TestSteadyStateAllocations: after a warm-up call, conv, group norm and attention
// allocate no buffers; what remains is the goroutine fan-out (closures, WaitGroup),
// bounded here at 2 KiB per call, far below any tensor.
func TestSteadyStateAllocations(t *testing.T) {
	be := New()
	s := ops.ConvShape{N: 4, Cin: 16, H: 16, W: 16, Cout: 16, K: 3, Stride: 1, Pad: 1}
	x, w, b := be.Alloc(s.N*16*256), be.Alloc(16*16*9), be.Alloc(16)
	y := be.Alloc(s.N * 16 * 256)
	dx, dw, db := be.Alloc(x.Len()), be.Alloc(w.Len()), be.Alloc(16)
	as := ops.AttnShape{N: 4, L: 64, Heads: 2, D: 8}
	q, p := be.Alloc(4*64*16), be.Alloc(4*2*64*64)
	o, dq := be.Alloc(q.Len()), be.Alloc(q.Len())
	ns := ops.NormShape{N: 4, C: 16, HW: 256, G: 4, Eps: 1e-5}
	st := be.Alloc(32)
	loss := be.Alloc(1)
	step := func() {
		be.Conv2D(s, x, w, b, y)
		be.Conv2DBackward(s, x, w, y, dx, dw, db)
		be.Attention(as, q, q, q, o, p)
		be.AttentionBackward(as, q, q, q, p, o, dq, dq, dq)
		be.GroupNorm(ns, x, b, b, y, st)
		be.GroupNormBackward(ns, x, b, st, y, dx, db, db)
		be.MSE(x, y, loss)
	}
	step()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	const calls = 7
	for i := 0; i < 10; i++ {
		step()
	}
	runtime.ReadMemStats(&m1)
	per := float64(m1.TotalAlloc-m0.TotalAlloc) / (10 * calls)
	t.Logf("%.0f bytes allocated per op", per)
	if per > 2048 {
		t.Errorf("%.0f bytes allocated per op in steady state, want < 2 KiB (scratch must be reused)", per)
	}
}

func expectPanic(t *testing.T, what string, wants []string, f func()) {
	t.Helper()
	defer func() {
		t.Helper()
		p := recover()
		if p == nil {
			t.Fatalf("%s did not panic", what)
		}
		msg, _ := p.(string)
		for _, w := range wants {
			if !strings.Contains(msg, w) {
				t.Errorf("%s: panic %q does not mention %q", what, msg, w)
			}
		}
	}()
	f()
}

func TestShapeErrorsNameOpAndShape(t *testing.T) {
	be := New()
	s := ops.ConvShape{N: 2, Cin: 3, H: 5, W: 5, Cout: 4, K: 3, Stride: 1, Pad: 1}
	expectPanic(t, "conv with a short x", []string{"Conv2D", "Cin:3", "x has 10 elements, need 150"}, func() {
		be.Conv2D(s, be.Alloc(10), be.Alloc(108), nil, be.Alloc(200))
	})
	expectPanic(t, "group norm C%G≠0", []string{"GroupNorm", "G:4"}, func() {
		n := ops.NormShape{N: 1, C: 6, HW: 4, G: 4}
		be.GroupNorm(n, be.Alloc(24), be.Alloc(6), be.Alloc(6), be.Alloc(24), be.Alloc(8))
	})
	expectPanic(t, "add of unequal lengths", []string{"Add", "[3 4 3]"}, func() {
		be.Add(be.Alloc(3), be.Alloc(4), be.Alloc(3))
	})
	expectPanic(t, "float64 buffer on the float32 backend", []string{"Copy", "float64"}, func() {
		be.Copy(be.Alloc(3), New64().Alloc(3))
	})
	expectPanic(t, "slice out of range", []string{"Slice", "[2, 2+5)"}, func() { be.Slice(be.Alloc(6), 2, 5) })
	expectPanic(t, "timestep outside the schedule", []string{"QSample", "t[1] = 10"}, func() {
		sch := &ops.Schedule{T: 10, SqrtAlphaBar: be.Alloc(10), SqrtOneMinusAlphaBar: be.Alloc(10)}
		t := be.Alloc(2)
		be.Upload(t, []float32{3, 10})
		be.QSample(sch, 2, 1, t, be.Alloc(2), be.Alloc(2), be.Alloc(2))
	})
	expectPanic(t, "Data of the wrong precision", []string{"cpu.Data[float64]"}, func() { Data[float64](be.Alloc(1)) })
}

func TestUploadDownloadConvert(t *testing.T) {
	be := New64()
	b := be.Alloc(3)
	src := []float32{1.5, -2.25, 3e-8}
	be.Upload(b, src)
	for i, v := range Data[float64](b) {
		if v != float64(src[i]) {
			t.Errorf("uploaded[%d] = %g, want %g", i, v, src[i])
		}
	}
	Data[float64](b)[0] = 1.0 + 1e-12 // not a float32: Download rounds to nearest
	dst := make([]float32, 3)
	be.Download(dst, b)
	if dst[0] != 1 || dst[1] != -2.25 {
		t.Errorf("downloaded %v", dst)
	}
	if New().Name() != "cpu-float32" || be.Name() != "cpu-float64" {
		t.Errorf("names %q, %q", New().Name(), be.Name())
	}
}
