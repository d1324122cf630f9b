package train

import (
	"fmt"
	"math"

	"github.com/ddpmgo/ddpm/cuda"
	"github.com/ddpmgo/ddpm/ops"
)

// The device-controlled step: a training step that copies nothing between host and device.
//
// On a backend that can clip and check on the device (devCtl, implemented by *cuda.Backend: -device cuda and emu),
// a step ends with, all on the device and in kernel arguments alone:
//
//	SumSquares(G) → ‖G‖²                    next to the A micro-batch losses in `scalars`
//	ClipScale     ctl = [clip/A, skip, ·]   clip = min(1, grad_clip/(‖G‖/A + 1e-6)); skip = a non-finite ‖G‖² or
//	                                        loss (sticky unless train.skip_nonfinite: once set it stays)
//	StepStatsCtl  stats += this step        the window sums of losses and norms, the non-finite count and the first
//	                                        non-finite step's number, and the step's learning rate, bias
//	                                        corrections and EMA decay (kernels/optim.cu: step_stats_f32)
//	AdamWStepWin, EMAWin                    GradScale from ctl, the rest from stats; nothing done when skip is set
//	zero G                                  (under the sticky flag: unless skip is set, so the bad gradients stay)
//
// The host reads `stats` (one 56-byte copy) only every train.log_every steps, at checkpoints and at the end. The
// metrics are those of the host path: the logged loss and gradient norm are the means over the updated steps since
// the previous line, and a skipped step counts in `skipped`.
//
// The trade-off: a NaN or Inf is noticed up to train.log_every steps late. No update happens after it: the skip flag
// is set on the device in the step that went non-finite and, when the run is to stop (train.skip_nonfinite =
// false), it is sticky, so AdamW and the EMA leave the weights, moments and average of the last good step as they
// were until the host reads the flag. The host then stops with the error naming the step that first went
// non-finite (recorded on the device) and the first non-finite tensor (weights and the kept gradients, downloaded
// only then), and since a checkpoint is always preceded by a read, no checkpoint holds a step after it: the last
// good checkpoint rule holds. Under train.skip_nonfinite the bad steps are skipped on the device as they happen and
// counted at the next read. Until that read the host's AdamW step counter runs ahead by the number of skipped steps
// of the window; the device, which counts them, forms the learning rate (warm-up), the bias corrections and the EMA
// decay from the corrected counter (StepStatsCtl), so the updates are those of the host path, and the host
// corrects its counter at the read (checkpoints, which read first, hold the host path's counter).
//
// The CPU backend keeps the host path (train.go): the scalars are downloaded every step and the clipping, the check
// and the metrics are done on the host, as its results are defined.

// devCtl is what a backend needs for the device-controlled step.
type devCtl interface {
	NewCtl() *cuda.Ctl
	ClipScale(scalars ops.Buf, A int, maxNorm float64, sticky bool, ctl *cuda.Ctl)
	StepStatsCtl(scalars ops.Buf, A, step int, reset bool, sc cuda.StepSched, ctl *cuda.Ctl, stats ops.Buf)
	AdamWStepWin(h ops.AdamW, ctl *cuda.Ctl, stats ops.Buf, p, g, m, v ops.Buf)
	EMAWin(ctl *cuda.Ctl, stats ops.Buf, e, p ops.Buf)
	ZeroUnlessSkip(ctl *cuda.Ctl, g ops.Buf)
}

// devStep is the state of the device-controlled step.
type devStep struct {
	be      devCtl
	ctl     *cuda.Ctl
	stats   ops.Buf
	host    []float32 // stats, downloaded
	sticky  bool      // stop on a non-finite step (not train.skip_nonfinite)
	reset   bool      // the next step starts a new window
	pending int       // steps since the last read
}

// newDevStep returns the device-controlled step when tr's backend supports it (nil: the host path).
func newDevStep(tr *trainer) *devStep {
	be, ok := tr.be.(devCtl)
	if !ok {
		return nil
	}
	return &devStep{be: be, ctl: be.NewCtl(), stats: tr.be.Alloc(cuda.StepStats), host: make([]float32, cuda.StepStats),
		sticky: !tr.cfg.Train.SkipNonfinite, reset: true}
}

// window is what a read of the device statistics returns.
type window struct {
	loss, norm float64 // sums over the updated steps
	steps      int     // updated steps
	bad        int     // non-finite steps
	firstBad   int     // the first of them (1-based step)
	badLoss    float64 // its mean loss
	badNorm    float64 // its gradient norm ‖G‖/A
}

// stepDev runs one optimizer step on the device path (see above) and returns the learning rate used.
func (tr *trainer) stepDev() (float64, error) {
	d, be, tc := tr.dev, tr.be, tr.cfg.Train
	if err := tr.forwardBackward(); err != nil {
		return 0, err
	}
	be.SumSquares(tr.unet.Grads(), tr.gsq)
	d.be.ClipScale(tr.scalars, tr.A, tc.GradClip, d.sticky, d.ctl)
	tr.st.Step++
	tr.st.AdamStep++
	d.be.StepStatsCtl(tr.scalars, tr.A, tr.st.Step, d.reset, cuda.StepSched{
		AdamStep: tr.st.AdamStep, LR: tc.LR, Warmup: tc.WarmupSteps, Beta1: float64(float32(tc.AdamBeta1)),
		Beta2: float64(float32(tc.AdamBeta2)), WeightDecay: tc.WeightDecay, EMA: tc.EMADecay, EMAWarmup: tc.EMAWarmup,
	}, d.ctl, d.stats)
	d.reset = false
	d.be.AdamWStepWin(ops.AdamW{Beta1: float32(tc.AdamBeta1), Beta2: float32(tc.AdamBeta2), Eps: float32(tc.AdamEps)},
		d.ctl, d.stats, tr.unet.Params(), tr.unet.Grads(), tr.m, tr.v)
	d.be.EMAWin(d.ctl, d.stats, tr.ema, tr.unet.Params())
	if d.sticky {
		d.be.ZeroUnlessSkip(d.ctl, tr.unet.Grads())
	} else {
		tr.unet.ZeroGrads()
	}
	d.pending++
	// The rate of this step as the host knows it (exact unless a step of the window was skipped; for the metrics).
	return LR(tc.LR, tc.WarmupSteps, tr.st.AdamStep), nil
}

// readDev downloads the window statistics of the steps since the last read (one copy and one synchronisation),
// starts a new window, and accounts for the skipped steps (Skipped, AdamStep). A non-finite step in stop mode
// returns the error of the host path, naming that step (not the current one) and the first non-finite tensor.
func (tr *trainer) readDev() (window, error) {
	d := tr.dev
	var w window
	if d.pending == 0 {
		return w, nil
	}
	tr.be.Download(d.host, d.stats)
	if err := tr.be.Sync(); err != nil {
		return w, fmt.Errorf("train: step %d on %s: %w", tr.st.Step, tr.be.Name(), err)
	}
	h := d.host
	dbl := func(i int) float64 {
		return math.Float64frombits(uint64(math.Float32bits(h[i+1]))<<32 | uint64(math.Float32bits(h[i])))
	}
	integer := func(i int) int { return int(int32(math.Float32bits(h[i]))) }
	w = window{loss: dbl(0), norm: dbl(2), steps: integer(4), bad: integer(5), firstBad: integer(6),
		badLoss: float64(h[7]), badNorm: math.Sqrt(float64(h[8])) / float64(tr.A)}
	d.pending, d.reset = 0, true
	if w.bad == 0 {
		return w, nil
	}
	if d.sticky {
		return w, fmt.Errorf("train: step %d: %w (loss %v, gradient norm %v); first non-finite tensor: %s; "+
			"stopped without updating the weights since (noticed at step %d, the read of train.log_every). The last "+
			"good checkpoint is %s. Lower train.lr or set train.skip_nonfinite = true to skip such steps",
			w.firstBad, ErrNonFinite, w.badLoss, w.badNorm, tr.firstNonFinite(), tr.st.Step, tr.lastGood())
	}
	tr.st.Skipped += w.bad
	tr.st.AdamStep -= w.bad
	return w, nil
}
