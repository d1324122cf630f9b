//go:build !cuda

package cuda

import (
	"fmt"
	"math"
	"math/rand"
	"strings"
	"testing"

	"github.com/ddpmgo/ddpm/cpu"
	"github.com/ddpmgo/ddpm/ops"
)

// gridLog notes the GEMM launches (their grids) that reach the driver.
type gridLog struct {
	Driver
	grids map[string][]Dim3
}

func (g *gridLog) Launch(kernel string, grid, block Dim3, smem int, args ...Arg) error {
	if strings.HasPrefix(kernel, "conv2d_igemm_") || strings.HasPrefix(kernel, "conv2d_wgrad_") {
		g.grids[kernel] = append(g.grids[kernel], grid)
	}
	return g.Driver.Launch(kernel, grid, block, smem, args...)
}

// TestEmuSplitKInOneLaunch: a convolution whose GEMMs split along k (forward with a bias, backward-data into zeros
// and accumulating, backward-weight) at every precision: each GEMM is one launch of grid.z > 1, the result matches
// the float64 CPU twin, the ticket counters are 0 again afterwards, and a second run adds exactly as much again (the
// counters' reset lets each tile's last block find itself once more). The bias gradient rides on the packing of dy
// (packActBias, the same tickets) and is checked the same way.
func TestEmuSplitKInOneLaunch(t *testing.T) {
	// Forward: K = 9·64 = 576 over one tile → 2 chunks; backward-data: K = 9·64 over 1 tile; backward-weight: 4096
	// pixels over few tiles.
	s := ops.ConvShape{N: 16, Cin: 64, H: 8, W: 8, Cout: 64, K: 3, Stride: 1, Pad: 1}
	tol := map[ops.Precision]float64{ops.FP32: 1e-5, ops.TF32: 2e-3, ops.BF16: 1.6e-2} // tolGEMM; tolTF32; the bf16 band
	for _, p := range []ops.Precision{ops.FP32, ops.TF32, ops.BF16} {
		t.Run(string(p), func(t *testing.T) {
			gl := &gridLog{grids: map[string][]Dim3{}}
			be := guardedBackend(t, func(d Driver) Driver { gl.Driver = d; return gl })
			if err := be.SetPrecision(p); err != nil {
				t.Fatal(err)
			}
			ref := cpu.New64()
			rnd := rand.New(rand.NewSource(7))
			xn, wn, yn := s.N*s.Cin*s.H*s.W, s.Cout*s.Cin*9, s.N*s.Cout*s.OutH()*s.OutW()
			x, w, b, dy := fillsRand(rnd, xn), fillsRand(rnd, wn), fillsRand(rnd, s.Cout), fillsRand(rnd, yn)
			for i := range w {
				w[i] *= 0.1
			}
			up64 := func(v []float32) ops.Buf { u := ref.Alloc(len(v)); ref.Upload(u, v); return u }
			down64 := func(u ops.Buf) []float32 { v := make([]float32, u.Len()); ref.Download(v, u); return v }

			// Reference: y, dx (accumulated twice from zero), dw (twice).
			ry, rdx, rdw, rdb := ref.Alloc(yn), ref.Alloc(xn), ref.Alloc(wn), ref.Alloc(s.Cout)
			x64, w64, b64, dy64 := up64(x), up64(w), up64(b), up64(dy)
			ref.Conv2D(s, x64, w64, b64, ry)
			for k := 0; k < 2; k++ {
				ref.Conv2DBackward(s, x64, w64, dy64, rdx, rdw, rdb)
			}

			gy, gdx, gdw, gdb := be.Alloc(yn), be.Alloc(xn), be.Alloc(wn), be.Alloc(s.Cout)
			gx, gw, gb, gdy := fillsUpload(be, x), fillsUpload(be, w), fillsUpload(be, b), fillsUpload(be, dy)
			be.Conv2D(s, gx, gw, gb, gy)
			be.Fill(gdx, 0) // the first backward-data stores (a waiting fill, fills.go); the second accumulates
			for k := 0; k < 2; k++ {
				be.Conv2DBackward(s, gx, gw, gdy, gdx, gdw, gdb)
			}
			for _, c := range []struct {
				name      string
				got, want []float32
			}{{"y", fillsDownload(t, be, gy), down64(ry)}, {"dx", fillsDownload(t, be, gdx), down64(rdx)},
				{"dw", fillsDownload(t, be, gdw), down64(rdw)}, {"db", fillsDownload(t, be, gdb), down64(rdb)}} {
				var num, den float64
				for i := range c.want {
					d := float64(c.got[i]) - float64(c.want[i])
					num, den = num+d*d, den+float64(c.want[i])*float64(c.want[i])
				}
				if e := math.Sqrt(num / den); !(e <= tol[p]) {
					t.Errorf("%s at %s: normalized error %.3g > %g", c.name, p, e, tol[p])
				}
			}
			split := 0
			for k, gs := range gl.grids {
				for _, g := range gs {
					if g.Z > 1 {
						split++
					}
				}
				t.Logf("%s: grids %v", k, gs)
			}
			if split != 5 { // the forward, two backward-data and two backward-weight GEMMs
				t.Errorf("%d split GEMM launches, want 5 (each of the five GEMMs split: %s)", split, fmt.Sprint(gl.grids))
			}
			ticketsClear(t, be)
		})
	}
}
