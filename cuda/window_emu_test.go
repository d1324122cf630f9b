//go:build !cuda

package cuda

import (
	"math"
	"testing"

	"github.com/ddpmgo/ddpm/ops"
)

// TestEmuStepStatsWin: the window statistics of the training loop (kernels/optim.cu: step_stats_f32) against sums
// done here, the AdamW and EMA settings it forms against their host definitions (train.LR, train.EMADecay; the bias
// corrections as AdamWStep forms them), with the window's skipped steps taken off the AdamW counter, and
// adamw_win_f32, ema_win_f32 and zero_unless_skip_f32 against the plain AdamWStep and EMA given the same settings and
// the host's clipping factor (and against no update at all on a skipped step).
func TestEmuStepStatsWin(t *testing.T) {
	be := testBackend(t)
	const P, A = 300, 2
	sc := StepSched{LR: 2e-3, Warmup: 4, Beta1: float64(float32(0.9)), Beta2: float64(float32(0.999)), WeightDecay: 0.01,
		EMA: 0.999, EMAWarmup: true}
	vals := func(seed float64) []float32 {
		v := make([]float32, P)
		for i := range v {
			v[i] = float32(math.Sin(seed + float64(i)*0.37))
		}
		return v
	}
	up := func(v []float32) ops.Buf { b := be.Alloc(len(v)); be.Upload(b, v); return b }
	down := func(b ops.Buf) []float32 { v := make([]float32, b.Len()); be.Download(v, b); return v }
	ctl, stats := be.NewCtl(), be.Alloc(StepStats)
	p, g, m, v, e := up(vals(1)), up(vals(2)), up(vals(3)), be.Alloc(P), up(vals(4))
	nan := float32(math.NaN())
	var wantLoss, wantNorm float64
	for i, st := range []struct {
		scalars []float32
		reset   bool
		bad     bool
		k       int // the true AdamW step
	}{
		{[]float32{9, 0.5, 0.25}, true, false, 1},
		{[]float32{4, nan, 0.5}, false, true, 1}, // skipped: the next step is still AdamW step 2
		{[]float32{4, 1, 0.5}, false, false, 2},
		{[]float32{1, 0.5, 0.5}, true, false, 3}, // a new window (the host read and corrected its counter)
	} {
		step := i + 1
		kHost := st.k + map[int]int{2: 1, 3: 1}[step] // the host counts step 2 as an update until it reads
		if st.reset {
			wantLoss, wantNorm = 0, 0
		}
		be.Upload(g, vals(float64(10+step)))
		pb, mb, vb, eb := down(p), down(m), down(v), down(e)
		scal := up(st.scalars)
		be.ClipScale(scal, A, 1, false, ctl)
		sc.AdamStep = kHost
		be.StepStatsCtl(scal, A, step, st.reset, sc, ctl, stats)
		// The reference: the plain kernels with the host's settings of step k and its clipping factor, on copies;
		// nothing for a skipped step.
		lr := sc.LR
		if st.k < sc.Warmup {
			lr = sc.LR * float64(st.k) / float64(sc.Warmup)
		}
		s := float64(max(st.k-1, 0))
		decay := float32(math.Min(sc.EMA, (1+s)/(10+s)))
		pr, gr, mr, vr, er := up(pb), up(down(g)), up(mb), up(vb), up(eb)
		if !st.bad {
			be.AdamWStep(ops.AdamW{LR: float32(lr), Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.01,
				GradScale: hostClipScale(st.scalars[0], A, 1), Step: st.k}, pr, gr, mr, vr)
			be.EMA(decay, er, pr)
		}
		be.AdamWStepWin(ops.AdamW{Beta1: 0.9, Beta2: 0.999, Eps: 1e-8}, ctl, stats, p, g, m, v)
		be.EMAWin(ctl, stats, e, p)
		be.ZeroUnlessSkip(ctl, g)
		h := down(stats)
		if err := be.Sync(); err != nil {
			t.Fatal(err)
		}
		close := func(what string, got, want []float32) {
			for j := range want {
				if d := math.Abs(float64(got[j]) - float64(want[j])); !(d <= 1e-6*math.Max(1, math.Abs(float64(want[j])))) {
					t.Fatalf("step %d: %s[%d] = %v, want %v", step, what, j, got[j], want[j])
				}
			}
		}
		close("p", down(p), down(pr))
		close("m", down(m), down(mr))
		close("v", down(v), down(vr))
		close("ema", down(e), down(er))
		if st.bad {
			close("p (skipped)", down(p), pb)
		}
		if gz := down(g); (gz[0] == 0) != !st.bad {
			t.Fatalf("step %d: gradient %v after ZeroUnlessSkip (skip %v)", step, gz[0], st.bad)
		}
		close("settings", h[9:14], []float32{float32(lr), float32(lr) * float32(sc.WeightDecay),
			float32(1 / (1 - math.Pow(sc.Beta1, float64(st.k)))), float32(1 / (1 - math.Pow(sc.Beta2, float64(st.k)))), decay})
		if !st.bad {
			wantLoss += (float64(st.scalars[1]) + float64(st.scalars[2])) / A
			wantNorm += math.Sqrt(float64(st.scalars[0])) / A
		}
		dbl := func(i int) float64 {
			return math.Float64frombits(uint64(math.Float32bits(h[i+1]))<<32 | uint64(math.Float32bits(h[i])))
		}
		integer := func(i int) int { return int(int32(math.Float32bits(h[i]))) }
		wantSteps, wantBad, wantFirst := map[int]int{1: 1, 2: 1, 3: 2, 4: 1}[step], map[int]int{2: 1, 3: 1}[step], map[int]int{2: 2, 3: 2}[step]
		if math.Abs(dbl(0)-wantLoss) > 1e-12 || math.Abs(dbl(2)-wantNorm) > 1e-12 || integer(4) != wantSteps ||
			integer(5) != wantBad || integer(6) != wantFirst {
			t.Fatalf("step %d: window loss %v norm %v steps %d bad %d first %d; want %v %v %d %d %d", step, dbl(0), dbl(2),
				integer(4), integer(5), integer(6), wantLoss, wantNorm, wantSteps, wantBad, wantFirst)
		}
		if wantFirst == 2 && (!math.IsNaN(float64(h[7])) || h[8] != 4) {
			t.Fatalf("step %d: the first bad step's loss %v and ‖G‖² %v; want NaN and 4", step, h[7], h[8])
		}
	}
}
