package cuda

import (
	"fmt"
	"math"

	"github.com/ddpmgo/ddpm/ops"
)

// Launchers of kernels/optim.cu.

// AdamWStep updates p, m, v in place from g (see ops.AdamW); the bias corrections are formed in float64.
func (be *Backend) AdamWStep(h ops.AdamW, p, g, m, v ops.Buf) {
	if h.Step < 1 {
		panic(fmt.Sprintf("cuda AdamWStep %+v: Step is 1-based", h))
	}
	s := be.bufs("AdamWStep", p.Len(), []string{"p", "g", "m", "v"}, p, g, m, v)
	rc1 := float32(1 / (1 - math.Pow(float64(h.Beta1), float64(h.Step))))
	rc2 := float32(1 / (1 - math.Pow(float64(h.Beta2), float64(h.Step))))
	n := s[0].n
	be.launch1D("AdamWStep", "adamw_f32", n, Ptr(s[0].p), Ptr(s[1].p), Ptr(s[2].p), Ptr(s[3].p), I64(int64(n)),
		F32(h.LR), F32(h.Beta1), F32(h.Beta2), F32(h.Eps), F32(h.LR*h.WeightDecay), F32(h.GradScale), F32(rc1), F32(rc2))
}

// EMA: e[i] = decay·e[i] + (1−decay)·p[i].
func (be *Backend) EMA(decay float32, e, p ops.Buf) {
	s := be.bufs("EMA", e.Len(), []string{"e", "p"}, e, p)
	be.launch1D("EMA", "ema_f32", s[0].n, Ptr(s[0].p), Ptr(s[1].p), F32(decay), I64(int64(s[0].n)))
}

// Ctl is the device-side control block of a training step that the host does not read every step: [GradScale,
// skip, non-finite count] (see kernels/optim.cu: clip_scale_f32).
type Ctl struct{ b *Buf }

// NewCtl allocates a zeroed control block.
func (be *Backend) NewCtl() *Ctl { return &Ctl{b: be.Alloc(3).(*Buf)} }

// Buf is the block as a 3-element buffer (to read or reset it).
func (c *Ctl) Buf() ops.Buf { return c.b }

// ClipScale writes ctl's GradScale = min(1, maxNorm/(‖G‖/A + 1e-6))/A (1/A when maxNorm ≤ 0) from
// scalars = [‖G‖², loss_0 … loss_{A−1}], and its skip flag (sticky: once set it stays) and non-finite count, in one
// thread on the device.
func (be *Backend) ClipScale(scalars ops.Buf, A int, maxNorm float64, sticky bool, ctl *Ctl) {
	s := be.bufs("ClipScale", 1+A, []string{"scalars"}, scalars)[0]
	if A < 1 {
		panic(fmt.Sprintf("cuda ClipScale: A = %d", A))
	}
	be.keep("ClipScale", be.d.Launch("clip_scale_f32", Dim3{X: 1}, Dim3{X: 1}, 0, Ptr(s.p), Ptr(ctl.b.p),
		I32(int32(A)), F64(maxNorm), I32(b2i(sticky))))
}

// StepStats is the number of float32 elements of a step-statistics buffer (see StepStatsCtl).
const StepStats = 14

// StepSched is what StepStatsCtl needs to form a step's AdamW and EMA settings on the device (see train.LR and
// train.EMADecay).
type StepSched struct {
	AdamStep                       int // the host's AdamW step, counting the window's skipped steps as updates
	LR                             float64
	Warmup                         int
	Beta1, Beta2, WeightDecay, EMA float64
	EMAWarmup                      bool
}

// StepStatsCtl accumulates the training loop's window statistics into stats (StepStats elements, an allocation of
// its own so that its doubles are aligned) after ClipScale of the same step, in one thread on the device: the sums
// of the step losses (the mean of scalars[1:]) and gradient norms (√scalars[0]/A) over the steps whose update ctl
// lets through, their number, and the number of non-finite steps with the first one's 1-based number step, loss
// and ‖G‖²; and the step's AdamW and EMA settings for AdamWStepWin and EMAWin, from the AdamW step
// sc.AdamStep − (skipped steps of the window) (see kernels/optim.cu: step_stats_f32 for the layout). reset starts a
// new window.
func (be *Backend) StepStatsCtl(scalars ops.Buf, A, step int, reset bool, sc StepSched, ctl *Ctl, stats ops.Buf) {
	if A < 1 || step < 1 || step > math.MaxInt32 || sc.AdamStep < 1 || sc.AdamStep > math.MaxInt32 || sc.Warmup > math.MaxInt32 {
		panic(fmt.Sprintf("cuda StepStatsCtl: A = %d, step = %d, %+v", A, step, sc))
	}
	s := be.bufs("StepStatsCtl", 1+A, []string{"scalars"}, scalars)[0]
	st := be.bufs("StepStatsCtl", StepStats, []string{"stats"}, stats)[0]
	be.keep("StepStatsCtl", be.d.Launch("step_stats_f32", Dim3{X: 1}, Dim3{X: 1}, 0, Ptr(s.p), Ptr(ctl.b.p),
		Ptr(st.p), I32(int32(A)), I32(int32(step)), I32(b2i(reset)), I32(int32(sc.AdamStep)), F64(sc.LR),
		I32(int32(sc.Warmup)), F64(sc.Beta1), F64(sc.Beta2), F64(sc.WeightDecay), F64(sc.EMA), I32(b2i(sc.EMAWarmup))))
}

// AdamWStepWin is AdamWStep with GradScale read from ctl (ClipScale) and the learning rate, weight decay and bias
// corrections from stats (StepStatsCtl), all on the device; skipped when ctl's skip flag is set. Of h only Beta1,
// Beta2 and Eps are used.
func (be *Backend) AdamWStepWin(h ops.AdamW, ctl *Ctl, stats ops.Buf, p, g, m, v ops.Buf) {
	s := be.bufs("AdamWStepWin", p.Len(), []string{"p", "g", "m", "v"}, p, g, m, v)
	st := be.bufs("AdamWStepWin", StepStats, []string{"stats"}, stats)[0]
	n := s[0].n
	be.launch1D("AdamWStepWin", "adamw_win_f32", n, Ptr(s[0].p), Ptr(s[1].p), Ptr(s[2].p), Ptr(s[3].p),
		I64(int64(n)), F32(h.Beta1), F32(h.Beta2), F32(h.Eps), Ptr(ctl.b.p), Ptr(st.p))
}

// EMAWin is EMA with the decay read from stats (StepStatsCtl) on the device; skipped when ctl's skip flag is set.
func (be *Backend) EMAWin(ctl *Ctl, stats ops.Buf, e, p ops.Buf) {
	s := be.bufs("EMAWin", e.Len(), []string{"e", "p"}, e, p)
	st := be.bufs("EMAWin", StepStats, []string{"stats"}, stats)[0]
	be.launch1D("EMAWin", "ema_win_f32", s[0].n, Ptr(s[0].p), Ptr(s[1].p), I64(int64(s[0].n)), Ptr(ctl.b.p), Ptr(st.p))
}

// ZeroUnlessSkip zeroes g unless ctl's skip flag is set (the gradients of a skipped step are kept for inspection).
func (be *Backend) ZeroUnlessSkip(ctl *Ctl, g ops.Buf) {
	s := be.bufs("ZeroUnlessSkip", g.Len(), []string{"g"}, g)[0]
	be.launch1D("ZeroUnlessSkip", "zero_unless_skip_f32", s.n, Ptr(s.p), I64(int64(s.n)), Ptr(ctl.b.p))
}
