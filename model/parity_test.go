package model

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/cpu"
	"github.com/ddpmgo/ddpm/ops"
)

// parityConfig is the tiny U-Net of scripts/torch_parity.py: three levels so that a
// middle up block mixes three widths, two resnets per block (three per up block, as
// in celeba32), attention in the middle block and at resolution 4 (down block 1 and
// up block 1), multi-head attention (2 and 3 heads of 4 channels), 2 groups.
func parityConfig() (cfg config.Model, inChannels, imageSize int) {
	return config.Model{
		BlockChannels:        []int{4, 8, 12},
		LayersPerBlock:       2,
		MidAttention:         true,
		AttentionResolutions: []int{4},
		AttentionHeadDim:     4,
		NormGroups:           2,
		NormEps:              1e-5,
		FlipSinToCos:         true,
		DownsamplePadding:    1,
	}, 3, 8
}

// TestTorchParity runs the U-Net with the weights, input and timesteps of the
// PyTorch fixture and compares the output, the MSE loss and every parameter
// gradient with PyTorch's float64 results, on the float64 and the float32 CPU
// backend. Errors are max|Δ| over a tensor divided by max|reference| of the tensor.
//
// Tolerances: float64 computes the same maths in another order, so only rounding at
// ~1e-16 per op, grown by the depth of the network, separates it from PyTorch:
// 1e-9 leaves orders of magnitude for that and still catches any wrong term. float32
// rounds each op at 6e-8 relative; through ~50 layers, sums of hundreds of products
// and the cancelling differences of backward, 1e-4 of a tensor's scale is the bound
// (observed: ~3e-6; a wrong wiring or formula gives errors of order 1).
//
// The gradients of to_k.bias are exactly 0 in exact arithmetic (adding b to every
// key adds q·b to a whole row of logits, which softmax ignores), so both sides hold
// rounding noise there; a gradient tensor's scale is therefore floored at 1e-4 of
// the largest gradient of the model.
func TestTorchParity(t *testing.T) {
	cfg, in, size := parityConfig()
	checkTorchParity(t, "testdata/unet_parity.bin", cfg, in, size)
}

// checkTorchParity is TestTorchParity for the fixture at path and the model of cfg.
func checkTorchParity(t *testing.T, path string, cfg config.Model, in, size int) {
	fx, order := loadFixture(t, path)
	for _, tc := range []struct {
		name string
		be   ops.Backend
		tol  float64
	}{
		{"float64", cpu.New64(), 1e-9},
		{"float32", cpu.New(), 1e-4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x, ts, target := fx["input"], fx["timesteps"], fx["target"]
			batch := ts.shape[0]
			u, err := New(tc.be, cfg, in, size, batch)
			if err != nil {
				t.Fatal(err)
			}
			// Every fixture parameter has a table entry of the same shape, and back.
			host := make([]float32, u.NumParams())
			seen := 0
			for _, p := range u.Table() {
				w, ok := fx["param/"+p.Name]
				if !ok {
					t.Fatalf("parameter %s %v is not in the PyTorch model", p.Name, p.Shape)
				}
				if !slices.Equal(w.shape, p.Shape) {
					t.Fatalf("parameter %s: Go shape %v, PyTorch %v", p.Name, p.Shape, w.shape)
				}
				copy(host[p.Offset:p.Offset+p.Size], w.f32)
				seen++
			}
			var torchParams int
			for _, name := range order {
				if strings.HasPrefix(name, "param/") {
					torchParams++
				}
			}
			if seen != torchParams {
				t.Fatalf("Go table has %d tensors, PyTorch %d", seen, torchParams)
			}
			tc.be.Upload(u.Params(), host)

			xb, tb, yb := upload(tc.be, x.f32), upload(tc.be, ts.f32), upload(tc.be, target.f32)
			out := u.Forward(xb, tb, batch)
			loss := tc.be.Alloc(1)
			tc.be.MSE(out, yb, loss)
			dout := tc.be.Alloc(out.Len())
			tc.be.MSEBackward(1, out, yb, dout)
			u.ZeroGrads()
			u.Backward(dout)

			var report strings.Builder
			worst := 0.0
			var gradScale float64
			for _, name := range order {
				if strings.HasPrefix(name, "grad/") {
					_, s := relErr(fx[name].data, fx[name].data)
					gradScale = max(gradScale, s)
				}
			}
			check := func(name string, got, want []float64) {
				if len(got) != len(want) {
					t.Fatalf("%s: %d values, PyTorch %d", name, len(got), len(want))
				}
				maxAbs, scale := relErr(got, want)
				if strings.HasPrefix(name, "grad/") {
					scale = max(scale, 1e-4*gradScale)
				}
				e := maxAbs / max(scale, 1e-300)
				worst = max(worst, e/tc.tol)
				status := "ok"
				if !(e <= tc.tol) {
					status = "FAIL"
					t.Errorf("%s: max |Δ| %.3g against scale %.3g = %.3g relative > tolerance %.0e", name, maxAbs, scale, e, tc.tol)
				}
				fmt.Fprintf(&report, "  %-55s max|Δ| %9.3g  scale %9.3g  rel %9.3g  (%5.1f%% of tol) %s\n",
					name, maxAbs, scale, e, 100*e/tc.tol, status)
			}
			check("output", read(out), fx["output"].data)
			check("loss", read(loss), fx["loss"].data)
			grads := read(u.Grads())
			for _, p := range u.Table() {
				check("grad/"+p.Name, grads[p.Offset:p.Offset+p.Size], fx["grad/"+p.Name].data)
			}
			t.Logf("%s backend vs PyTorch float64 (tolerance %.0e; worst tensor uses %.1f%% of it):\n%s",
				tc.name, tc.tol, 100*worst, report.String())
		})
	}
}
