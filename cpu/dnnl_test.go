//go:build cgo

package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/ddpmgo/ddpm/ops"
)

// TestDNNLConvMatchesGEMMPath: the float32 backend's convolutions go to oneDNN, and
// forward, backward-data, backward-weight and bias agree with the GEMM path of conv.go
// (the same backend with oneDNN off) on shapes that cover its cases: 3×3 same at a size
// on the shifted path and below it, stride 2, 1×1, 3 input channels, a channel count
// that is not a multiple of oneDNN's 16-channel blocks, one sample. The backward
// gradients start non-zero to check that they accumulate, and subsets of (dx, dw, db)
// are requested. Then the oneDNN results are bit-identical on a second, fresh backend.
func TestDNNLConvMatchesGEMMPath(t *testing.T) {
	shapes := []ops.ConvShape{
		{N: 3, Cin: 16, H: 32, W: 32, Cout: 32, K: 3, Stride: 1, Pad: 1},
		{N: 4, Cin: 32, H: 8, W: 8, Cout: 32, K: 3, Stride: 1, Pad: 1},
		{N: 2, Cin: 24, H: 9, W: 10, Cout: 20, K: 3, Stride: 2, Pad: 1},
		{N: 2, Cin: 48, H: 8, W: 8, Cout: 16, K: 1, Stride: 1, Pad: 0},
		{N: 2, Cin: 3, H: 16, W: 16, Cout: 12, K: 3, Stride: 1, Pad: 1},
		{N: 1, Cin: 12, H: 4, W: 4, Cout: 3, K: 3, Stride: 1, Pad: 1},
	}
	r := rand.New(rand.NewPCG(5, 6))
	host := func(n int) []float32 {
		d := make([]float32, n)
		for i := range d {
			d[i] = float32(r.NormFloat64())
		}
		return d
	}
	for _, s := range shapes {
		for _, want := range [][3]bool{{true, true, true}, {true, false, false}, {false, true, false}, {false, false, true}} {
			t.Run(fmt.Sprintf("%+v/dx=%v,dw=%v,db=%v", s, want[0], want[1], want[2]), func(t *testing.T) {
				x, w, b := host(s.N*s.Cin*s.H*s.W), host(s.Cout*s.Cin*s.K*s.K), host(s.Cout)
				dy := host(s.N * s.Cout * s.OutH() * s.OutW())
				dx0, dw0, db0 := host(len(x)), host(len(w)), host(len(b))
				run := func(be *Backend[float32]) [][]float32 {
					in := func(d []float32) ops.Buf { buf := be.Alloc(len(d)); be.Upload(buf, d); return buf }
					y := be.Alloc(len(dy))
					be.Conv2D(s, in(x), in(w), in(b), y)
					var dx, dw, db ops.Buf
					if want[0] {
						dx = in(dx0)
					}
					if want[1] {
						dw = in(dw0)
					}
					if want[2] {
						db = in(db0)
					}
					be.Conv2DBackward(s, in(x), in(w), in(dy), dx, dw, db)
					res := [][]float32{Data[float32](y)}
					for _, g := range []ops.Buf{dx, dw, db} {
						if g != nil {
							res = append(res, Data[float32](g))
						}
					}
					return res
				}
				on := New()
				if on.dn == nil {
					t.Fatal("New() has no oneDNN state: convolutions would not go to oneDNN")
				}
				off := New()
				off.dn = nil
				got, ref := run(on), run(off)
				for i := range ref {
					var scale, maxd float64
					for j := range ref[i] {
						scale = max(scale, math.Abs(float64(ref[i][j])))
						maxd = max(maxd, math.Abs(float64(got[i][j]-ref[i][j])))
					}
					if maxd > 1e-5*max(scale, 1) {
						t.Errorf("result %d: max |oneDNN − GEMM| = %g, scale %g", i, maxd, scale)
					}
				}
				again := run(New())
				for i := range got {
					for j := range got[i] {
						if math.Float32bits(again[i][j]) != math.Float32bits(got[i][j]) {
							t.Fatalf("result %d element %d: %g on a second backend, %g on the first", i, j, again[i][j], got[i][j])
						}
					}
				}
			})
		}
	}
}

// TestDNNLBackendsInParallel: two float32 backends running convolutions at once (tests in parallel, a sampler beside
// a trainer) give what each gives alone: dnnl.c's workspace is shared by the process, and dnnlMu keeps one backend
// from writing into the other's reordered operands.
func TestDNNLBackendsInParallel(t *testing.T) {
	shapes := []ops.ConvShape{
		{N: 4, Cin: 32, H: 16, W: 16, Cout: 32, K: 3, Stride: 1, Pad: 1},
		{N: 2, Cin: 64, H: 8, W: 8, Cout: 48, K: 3, Stride: 1, Pad: 1},
	}
	type result struct{ y, dx, dw []float32 }
	run := func(be *Backend[float32], s ops.ConvShape, seed int64) result {
		r := rand.New(rand.NewPCG(uint64(seed), 1))
		vals := func(n int) ops.Buf { return normalBuf(be, r, n) }
		xn, wn, yn := s.N*s.Cin*s.H*s.W, s.Cout*s.Cin*s.K*s.K, s.N*s.Cout*s.OutH()*s.OutW()
		x, w, dy := vals(xn), vals(wn), vals(yn)
		y, dx, dw := be.Alloc(yn), be.Alloc(xn), be.Alloc(wn)
		be.Conv2D(s, x, w, nil, y)
		be.Conv2DBackward(s, x, w, dy, dx, dw, nil)
		return result{Data[float32](y), Data[float32](dx), Data[float32](dw)}
	}
	alone := make([]result, len(shapes))
	for i, s := range shapes {
		alone[i] = run(New(), s, int64(i))
	}
	bes := []*Backend[float32]{New(), New()}
	got := make([][]result, len(shapes))
	var wg sync.WaitGroup
	for i, s := range shapes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < 20; k++ {
				got[i] = append(got[i], run(bes[i], s, int64(i)))
			}
		}()
	}
	wg.Wait()
	for i := range shapes {
		for k, g := range got[i] {
			for _, c := range []struct {
				name      string
				got, want []float32
			}{{"y", g.y, alone[i].y}, {"dx", g.dx, alone[i].dx}, {"dw", g.dw, alone[i].dw}} {
				for j := range c.want {
					if c.got[j] != c.want[j] {
						t.Fatalf("shape %d, run %d beside the other backend: %s[%d] = %v, alone %v", i, k, c.name, j,
							c.got[j], c.want[j])
					}
				}
			}
		}
	}
}
