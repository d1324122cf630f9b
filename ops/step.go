package ops

import (
	"fmt"
	"math"
)

// The end of a training step: clipping, the non-finite check, the gated optimizer update and the window
// statistics, as one capability (StepController) with a host implementation (HostStepControl) that is its
// definition and its CPU twin. A backend that can do it without the host (package cuda: kernels/optim.cu) lets the
// training loop copy nothing between host and device inside a step; the host reads the window statistics only when
// it logs, checkpoints or redraws the progress bar.
//
// For a step whose A micro-batch losses are loss_0 … loss_{A−1} and whose accumulated gradient is G, Update does
//
//	‖G‖² = SumSquares(G);  norm = √‖G‖²/A;  loss = (Σ_k loss_k)/A
//	bad  = ‖G‖² or some loss_k is NaN/Inf
//	skip = bad, or (Sticky and an earlier step of the run was bad)
//	if !skip: s = next[u] (u = updates since the last Read)
//	          AdamWStep(s.AdamW(β1, β2, eps, GradScale = ClipFactor(MaxNorm, norm)/A), p, G, m, v);  EMA(s.EMADecay, e, p)
//	          window: Loss += loss, Norm += norm, Steps++
//	if bad:   window: Bad++; the first bad step of the window keeps its index, loss and ‖G‖²
//	unless skip and Sticky: G = 0      (a run that stops keeps the bad gradients for the error message)
//
// The schedule values (learning rate, bias corrections, EMA decay) are not formed here: the training loop computes
// them in Go (package train, schedule.go) for the updates to come and hands them over with SetSettings after each
// Read, so each formula lives once. Indexing them by updates (not steps) gives a step after a skipped one the settings of the update it
// actually is, as if the host had known of the skip at once.

// ClipFactor is the factor that clips a gradient of global L2 norm `norm` to at most maxNorm, as
// torch.nn.utils.clip_grad_norm_: min(1, maxNorm/(norm + 1e-6)); maxNorm ≤ 0 turns clipping off. Kernels that clip
// on the device (kernels/optim.cu: step_control_f32) compute this same expression in double.
func ClipFactor(maxNorm, norm float64) float64 {
	if maxNorm <= 0 {
		return 1
	}
	return math.Min(1, maxNorm/(norm+1e-6))
}

// StepSettings are the optimizer values of one update, formed on the host by the training schedule.
type StepSettings struct {
	LR       float32 // learning rate
	Decay    float32 // LR·weight decay, the decoupled decay factor
	RC1, RC2 float32 // bias corrections 1/(1−β1^k), 1/(1−β2^k) of AdamW update k
	EMADecay float32
}

// AdamW is s as the hyper-parameters of AdamWStep.
func (s StepSettings) AdamW(beta1, beta2, eps, gradScale float32) AdamW {
	return AdamW{LR: s.LR, Decay: s.Decay, RC1: s.RC1, RC2: s.RC2, Beta1: beta1, Beta2: beta2, Eps: eps, GradScale: gradScale}
}

// StepConfig is what stays fixed over a run's steps.
type StepConfig struct {
	A                 int     // micro-batches per step (≥ 1)
	MaxNorm           float64 // clipping threshold; ≤ 0: no clipping
	Sticky            bool    // a bad step skips every later update too (the run is about to stop)
	Beta1, Beta2, Eps float32 // AdamW
	Window            int     // the most steps between two Reads (the length Read's settings must have)
}

// Window is what Read returns: the statistics of the steps since the previous Read.
type Window struct {
	Loss, Norm float64 // sums over the updated steps of their loss and norm
	Steps      int     // steps that updated the weights
	Taken      int     // steps, updated or not
	Bad        int     // steps with a non-finite loss or ‖G‖²
	FirstBad   int     // 0-based index among the Taken steps of the first bad one (valid when Bad > 0)
	BadLoss    float64 // its loss
	BadNormSq  float64 // its ‖G‖²
}

// StepControl ends the training steps of one run (see above).
type StepControl interface {
	// Loss is where micro-batch k's loss goes: a one-element buffer for MSE.
	Loss(k int) Buf
	// Update ends a step whose micro-batch losses are in Loss(0 … A−1) and whose accumulated gradient is g: it
	// updates p, m, v and the EMA e unless the step is skipped, and zeroes g (see above). It panics when
	// Window steps were taken since the last Read.
	Update(p, g, m, v, e Buf)
	// Read synchronises, returns the window since the previous Read (or since the start; empty before the first
	// step) and starts a new one.
	Read() (Window, error)
	// SetSettings gives the updates of the window the settings next[0], next[1], … (at least Window of them), once
	// after each Read and before the first Update.
	SetSettings(next []StepSettings)
	// Free releases what the controller allocated.
	Free()
}

// StepController is a backend that ends steps on its own (package cuda).
type StepController interface {
	NewStepControl(c StepConfig) StepControl
}

// NewStepControl returns be's own controller when it has one, and otherwise the host implementation.
func NewStepControl(be Backend, c StepConfig) StepControl {
	if c.A < 1 || c.Window < 1 {
		panic(fmt.Sprintf("NewStepControl %+v: A and Window must be ≥ 1", c))
	}
	if sc, ok := be.(StepController); ok {
		return sc.NewStepControl(c)
	}
	return NewHostStepControl(be, c)
}

// HostStepControl is the definition of StepControl on any backend: ‖G‖² and the losses are downloaded every step
// and the decisions are taken on the host. It is the CPU twin of the device controllers.
type HostStepControl struct {
	be      Backend
	c       StepConfig
	scalars Buf // [‖G‖², loss_0 … loss_{A−1}]
	gsq     Buf
	losses  []Buf
	host    []float32
	next    []StepSettings
	w       Window
	stuck   bool
}

// NewHostStepControl allocates the scalars of c on be.
func NewHostStepControl(be Backend, c StepConfig) *HostStepControl {
	h := &HostStepControl{be: be, c: c, scalars: be.Alloc(1 + c.A), host: make([]float32, 1+c.A)}
	h.gsq = be.Slice(h.scalars, 0, 1)
	for k := 0; k < c.A; k++ {
		h.losses = append(h.losses, be.Slice(h.scalars, 1+k, 1))
	}
	return h
}

// Loss is where micro-batch k's loss goes.
func (h *HostStepControl) Loss(k int) Buf { return h.losses[k] }

// Update ends a step (see StepControl).
func (h *HostStepControl) Update(p, g, m, v, e Buf) {
	c, be := h.c, h.be
	if h.w.Taken >= c.Window || h.w.Steps >= len(h.next) {
		panic(fmt.Sprintf("StepControl: %d steps since the last Read, the window is %d with %d settings (SetSettings after Read)", h.w.Taken, c.Window, len(h.next)))
	}
	be.SumSquares(g, h.gsq)
	be.Download(h.host, h.scalars)
	gsq := float64(h.host[0])
	bad := !finite(gsq)
	loss := 0.0
	for _, l := range h.host[1:] {
		bad = bad || !finite(float64(l))
		loss += float64(l)
	}
	loss /= float64(c.A)
	norm := math.Sqrt(gsq) / float64(c.A)
	if bad {
		if h.w.Bad == 0 {
			h.w.FirstBad, h.w.BadLoss, h.w.BadNormSq = h.w.Taken, loss, gsq
		}
		h.w.Bad++
	}
	skip := bad || (c.Sticky && h.stuck)
	h.stuck = h.stuck || (c.Sticky && bad)
	if !skip {
		s := h.next[h.w.Steps]
		be.AdamWStep(s.AdamW(c.Beta1, c.Beta2, c.Eps, float32(ClipFactor(c.MaxNorm, norm)/float64(c.A))), p, g, m, v)
		be.EMA(s.EMADecay, e, p)
		h.w.Loss += loss
		h.w.Norm += norm
		h.w.Steps++
	}
	if !(skip && c.Sticky) {
		be.Fill(g, 0)
	}
	h.w.Taken++
}

// Read returns the window and starts the next (see StepControl).
func (h *HostStepControl) Read() (Window, error) {
	w := h.w
	h.w = Window{}
	h.next = h.next[:0]
	return w, h.be.Sync()
}

// SetSettings keeps the settings of the window's updates (see StepControl).
func (h *HostStepControl) SetSettings(next []StepSettings) {
	if len(next) < h.c.Window {
		panic(fmt.Sprintf("StepControl SetSettings: %d settings for a window of %d steps", len(next), h.c.Window))
	}
	h.next = append(h.next[:0], next...)
}

// Free releases the scalars.
func (h *HostStepControl) Free() { h.be.Free(h.scalars) }

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
