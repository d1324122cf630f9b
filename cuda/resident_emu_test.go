//go:build !cuda

package cuda

import (
	"math"
	"math/rand"
	"testing"

	"github.com/ddpmgo/ddpm/cpu"
	"github.com/ddpmgo/ddpm/ops"
	"github.com/ddpmgo/ddpm/ops/opstest"
)

// Conformance of the kernels of the device-resident training step (kernels/optim.cu: clip_scale_f32 and the window
// updates it drives, adamw_win_f32 and ema_win_f32) against their host definitions. The data feed's kernels
// (gather_epoch_u8_f32, timesteps_f32) are checked in conformance_test.go, on the GPU too.

// winSched is a StepSched with no warm-ups, so that StepStatsCtl hands AdamWStepWin and EMAWin exactly h's learning
// rate, weight decay and bias corrections and the EMA decay ema (the same float64 → float32 roundings as AdamWStep's
// launcher and EMA's argument).
func winSched(h ops.AdamW, ema float32) StepSched {
	return StepSched{AdamStep: h.Step, LR: float64(h.LR), Beta1: float64(h.Beta1), Beta2: float64(h.Beta2),
		WeightDecay: float64(h.WeightDecay), EMA: float64(ema)}
}

// hostClipScale is train.ClipScale's GradScale, formed here: min(1, maxNorm/(‖G‖/A + 1e-6))/A, 1/A when maxNorm ≤ 0.
func hostClipScale(gsq float32, A int, maxNorm float64) float32 {
	clip := 1.0
	if gn := math.Sqrt(float64(gsq)) / float64(A); maxNorm > 0 {
		clip = math.Min(1, maxNorm/(gn+1e-6))
	}
	return float32(clip / float64(A))
}

// TestEmuClipScaleAdamWCtl: the device-side clipping factor drives the AdamW and EMA updates (AdamWStepWin, EMAWin)
// exactly as the same factor passed from the host to the plain AdamWStep and EMA (ClipScale in float64, as
// train.ClipScale), and a non-finite loss or norm skips them.
func TestEmuClipScaleAdamWCtl(t *testing.T) {
	be := testBackend(t)
	const P, A = 1000, 2
	rnd := rand.New(rand.NewSource(6))
	vals := func(lo, hi float64) []float32 {
		v := make([]float32, P)
		for i := range v {
			v[i] = float32(lo + (hi-lo)*rnd.Float64())
		}
		return v
	}
	h := ops.AdamW{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01, Step: 3}
	p0, g0, m0, v0, e0 := vals(-1, 1), vals(-2, 2), vals(-0.1, 0.1), vals(0, 0.01), vals(-1, 1)
	for _, tc := range []struct {
		name    string
		gsq     float32
		loss    float32
		maxNorm float64
		sticky  bool
		skip    bool
	}{
		{"clipped", 9, 0.5, 1, false, false},
		{"unclipped", 0.25, 0.5, 1, false, false},
		{"clip off", 9, 0.5, 0, false, false},
		{"NaN loss", 9, float32(math.NaN()), 1, false, true},
		{"Inf norm", float32(math.Inf(1)), 0.5, 1, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := func(v []float32) ops.Buf { b := be.Alloc(len(v)); be.Upload(b, v); return b }
			scal := up([]float32{tc.gsq, 0.25, tc.loss})
			ctl, stats := be.NewCtl(), be.Alloc(StepStats)
			p1, g1, m1, v1, e1 := up(p0), up(g0), up(m0), up(v0), up(e0)
			be.ClipScale(scal, A, tc.maxNorm, tc.sticky, ctl)
			be.StepStatsCtl(scal, A, 1, true, winSched(h, 0.9), ctl, stats)
			be.AdamWStepWin(h, ctl, stats, p1, g1, m1, v1)
			be.EMAWin(ctl, stats, e1, p1)
			// The reference: the host factor, the plain kernels (none when the step is skipped).
			hh := h
			hh.GradScale = hostClipScale(tc.gsq, A, tc.maxNorm)
			p2, g2, m2, v2, e2 := up(p0), up(g0), up(m0), up(v0), up(e0)
			if !tc.skip {
				be.AdamWStep(hh, p2, g2, m2, v2)
				be.EMA(0.9, e2, p2)
			}
			c := make([]float32, 3)
			be.Download(c, ctl.Buf())
			outs := [][2]ops.Buf{{p1, p2}, {m1, m2}, {v1, v2}, {e1, e2}}
			got, want := make([]float32, P), make([]float32, P)
			for k, o := range outs {
				be.Download(got, o[0])
				be.Download(want, o[1])
				if err := be.Sync(); err != nil {
					t.Fatal(err)
				}
				for i := range got {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("buffer %d element %d: device factor %v, host factor %v", k, i, got[i], want[i])
					}
				}
			}
			if tc.skip {
				if c[1] != 1 || c[2] != 1 {
					t.Fatalf("ctl = %v, want skip 1 and count 1", c)
				}
			} else if c[0] != hh.GradScale || c[1] != 0 || c[2] != 0 {
				t.Fatalf("ctl = %v, want [%v 0 0]", c, hh.GradScale)
			}
			// Sticky: a finite step after a bad one still skips when sticky, and runs otherwise.
			if tc.skip {
				be.Upload(scal, []float32{1, 0.5, 0.5})
				be.ClipScale(scal, A, tc.maxNorm, tc.sticky, ctl)
				be.Download(c, ctl.Buf())
				if err := be.Sync(); err != nil {
					t.Fatal(err)
				}
				if want := map[bool]float32{true: 1, false: 0}[tc.sticky]; c[1] != want || c[2] != 1 {
					t.Fatalf("after a finite step, sticky %v: ctl = %v, want skip %v and count 1", tc.sticky, c, want)
				}
			}
		})
	}
}

// TestEmuAdamWWinMatchesCPU: the device-side update of the training loop (ClipScale, StepStatsCtl, AdamWStepWin)
// against the CPU twin's AdamWStep with the same factor formed on the host (the CPU backend's AdamW is the reference
// of the training-step parity).
func TestEmuAdamWWinMatchesCPU(t *testing.T) {
	be, ref := testBackend(t), cpu.New()
	const P = 513
	rnd := rand.New(rand.NewSource(8))
	v := func(lo, hi float64) []float32 {
		x := make([]float32, P)
		for i := range x {
			x[i] = float32(lo + (hi-lo)*rnd.Float64())
		}
		return x
	}
	p0, g0, m0, v0 := v(-1, 1), v(-2, 2), v(-0.1, 0.1), v(0, 0.01)
	h := ops.AdamW{LR: 2e-4, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01, Step: 1}
	run := func(b ops.Backend, f func(p, g, m, v ops.Buf)) []float32 {
		bufs := make([]ops.Buf, 4)
		for i, x := range [][]float32{p0, g0, m0, v0} {
			bufs[i] = b.Alloc(P)
			b.Upload(bufs[i], x)
		}
		f(bufs[0], bufs[1], bufs[2], bufs[3])
		out := make([]float32, P)
		b.Download(out, bufs[0])
		if err := b.Sync(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	scal := be.Alloc(2)
	be.Upload(scal, []float32{16, 0.3}) // ‖G‖ = 4 > clip 1: factor 1/(4 + 1e-6)
	got := run(be, func(p, g, m, v ops.Buf) {
		ctl, stats := be.NewCtl(), be.Alloc(StepStats)
		be.ClipScale(scal, 1, 1, false, ctl)
		be.StepStatsCtl(scal, 1, 1, true, winSched(h, 0.999), ctl, stats)
		be.AdamWStepWin(h, ctl, stats, p, g, m, v)
	})
	hh := h
	hh.GradScale = hostClipScale(16, 1, 1)
	want := run(ref, func(p, g, m, v ops.Buf) { ref.AdamWStep(hh, p, g, m, v) })
	if e, err := opstest.Compare(got, want); err != nil || !(e <= 1e-6) {
		t.Fatalf("normalized error %.3g > 1e-6 (the same float32 expression; sqrt and division rounding only) %v", e, err)
	}
}
