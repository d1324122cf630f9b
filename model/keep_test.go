package model

import (
	"math"
	"testing"

	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/cpu"
	"github.com/ddpmgo/ddpm/ops"
)

// hideKeeper is a backend without ops.ConvInputKeeper (its other methods are the wrapped backend's, at the
// wrapped backend's precision): the U-Net then saves every convolution input as float32.
type hideKeeper struct{ ops.Backend }

// TestKeptInputsBitExact: at bf16 on a CPU backend that keeps convolution inputs (the resnets' SiLU outputs, dropout
// outputs in training, the upsampled activations) as NHWC bf16, a training step's output and every gradient (the
// parameters' and the input's) equal those of the same step with every input saved as float32, bit for bit, with
// dropout on; the workspace is smaller by the kept inputs' halves (and their float32 forms share a scratch slot);
// and a precision change after New lays the workspace out again (fp32: nothing kept, the same results as a UNet made
// at fp32).
func TestKeptInputsBitExact(t *testing.T) {
	cfg := config.Model{BlockChannels: []int{32, 64}, LayersPerBlock: 1, MidAttention: true, AttentionResolutions: []int{8},
		AttentionHeadDim: 16, NormGroups: 8, NormEps: 1e-5, FlipSinToCos: true, DownsamplePadding: 1, Dropout: 0.2}
	const in, size, batch = 3, 16, 4
	be := cpu.New()
	if err := be.SetPrecision(ops.BF16); err != nil {
		t.Skipf("needs AVX512-BF16 or AMX: %v", err)
	}
	per := in * size * size
	x, ts := upload(be, ramp(batch*per)), upload(be, []float32{3, 70, 400, 999})
	r := ramp(batch*per + 7)[7:]
	dout := upload(be, r)
	step := func(u *UNet) (out, grads, dx []float64) {
		u.SetTrain(true, 5, 2)
		dxb := be.Alloc(batch * per)
		u.inputGrad = dxb
		u.ZeroGrads()
		out = read(u.Forward(x, ts, batch))
		u.Backward(dout)
		return out, read(u.Grads()), read(dxb)
	}
	mk := func(b ops.Backend) *UNet {
		u, err := New(b, cfg, in, size, batch)
		if err != nil {
			t.Fatal(err)
		}
		u.Init(9)
		return u
	}
	kept, plain := mk(be), mk(hideKeeper{be})
	nk := 0
	for _, k := range kept.lay.kept {
		if k > 0 {
			nk++
		}
	}
	if nk < 5 {
		t.Fatalf("%d of %d convolution inputs kept at bf16, want most (%v)", nk, len(kept.p.keeps), kept.lay.kept)
	}
	saved := 0
	for i, k := range kept.p.keeps {
		if kept.lay.kept[i] > 0 {
			saved += kept.p.tensors[k.id].per / 2
		}
	}
	if d := plain.lay.savedPer - kept.lay.savedPer; d != saved {
		t.Errorf("saved activations: %d elements per sample kept, %d as float32: the difference %d, want %d (the kept halves)",
			kept.lay.savedPer, plain.lay.savedPer, d, saved)
	}
	if kept.WorkspaceElems() >= plain.WorkspaceElems() {
		t.Errorf("workspace %d elements with kept inputs, %d without", kept.WorkspaceElems(), plain.WorkspaceElems())
	}
	same := func(what string, a, b [3][]float64) {
		for j, name := range []string{"output", "parameter gradients", "input gradient"} {
			for i := range a[j] {
				if math.Float64bits(a[j][i]) != math.Float64bits(b[j][i]) {
					t.Fatalf("%s: %s[%d] = %g and %g", what, name, i, a[j][i], b[j][i])
				}
			}
		}
	}
	var a, b [3][]float64
	a[0], a[1], a[2] = step(kept)
	b[0], b[1], b[2] = step(plain)
	same("bf16, inputs kept / saved as float32", a, b)

	// The precision changes after New: nothing is kept at fp32, and the step is a fresh fp32 UNet's.
	if err := be.SetPrecision(ops.FP32); err != nil {
		t.Fatal(err)
	}
	a[0], a[1], a[2] = step(kept)
	if kept.lay.perSample != plain.lay.perSample {
		t.Errorf("at fp32 the workspace has %d elements per sample, want %d (nothing kept)", kept.lay.perSample, plain.lay.perSample)
	}
	fresh := mk(be)
	b[0], b[1], b[2] = step(fresh)
	same("fp32 after bf16 / fp32 from New", a, b)
}
