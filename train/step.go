package train

import (
	"fmt"
	"math"

	"github.com/ddpmgo/ddpm/ops"
	"github.com/ddpmgo/ddpm/rng"
)

// step runs one optimizer step (see the package doc): the A micro-batches' forward and backward passes, then the
// step controller's update. It reads nothing back.
//
// On several ranks (Collective) each takes samples first … first+b−1 (b = B/N) of every micro-batch with their global
// indices, so t, ε, the flips and the dropout masks are those of one process; its loss gradient is scaled by 1/N, and
// the gradients are summed over the ranks (started during the last backward pass, reduce), so that the step
// controller sees the global batch's gradient on every rank.
func (tr *trainer) step() error {
	be, B, A, D, b, first := tr.be, tr.B, tr.A, tr.D, tr.b, tr.first
	for k := 0; k < A; k++ {
		g := uint64(tr.st.Step)*uint64(A) + uint64(k)
		if err := tr.feed.next(tr.ld, tr.x0, first, b); err != nil {
			return err
		}
		s0 := g*uint64(B) + uint64(first) // the global index of this rank's first sample
		be.Timesteps(tr.seed, rng.StreamTimestep, s0, tr.T, tr.tBuf)
		be.Normal(tr.seed, rng.StreamNoise, s0*uint64(D), tr.eps)
		be.QSample(tr.sch, b, D, tr.tBuf, tr.x0, tr.eps, tr.xt)
		tr.unet.SetTrain(true, tr.seed, g)
		pred := tr.unet.Forward(tr.xt, tr.tBuf, b)
		be.MSE(pred, tr.eps, tr.ctl.Loss(k))
		be.Fill(tr.dout, 0)
		be.MSEBackward(mean1(tr.ranks), pred, tr.eps, tr.dout)
		tr.reducing, tr.sent = tr.ranks > 1 && k == A-1, tr.unet.NumParams()
		tr.unet.Backward(tr.dout)
	}
	if tr.ranks > 1 {
		if err := tr.reduce(); err != nil {
			return err
		}
	}
	if tr.inject != nil {
		if err := tr.poison(); err != nil {
			return err
		}
	}
	tr.ctl.Update(tr.unet.Params(), tr.unet.Grads(), tr.m, tr.v, tr.ema)
	tr.st.Step++
	tr.st.AdamStep++ // counted as an update until a read says the step was skipped
	tr.pending++
	return nil
}

// read takes the window of the steps since the last read from the step controller (one copy and a synchronisation
// on a device) and hands it the settings of the next window's updates. Skipped steps are taken off the AdamW count
// and added to the skipped ones; a non-finite step in a run that stops on one (not train.skip_nonfinite) returns
// the error naming that step (not the current one) and the first non-finite tensor.
func (tr *trainer) read() (ops.Window, error) {
	w, err := tr.ctl.Read()
	if err != nil {
		return w, fmt.Errorf("train: step %d on %s: %w; the last good checkpoint is %s (continue with -resume, on this or another -device)",
			tr.st.Step, tr.be.Name(), err, tr.out.lastGood())
	}
	readAt := tr.st.Step - tr.pending
	tr.pending = 0
	if w.Bad > 0 {
		first := readAt + w.FirstBad + 1
		if !tr.cfg.Train.SkipNonfinite {
			return w, fmt.Errorf("train: step %d: %w (loss %v, gradient norm %v); first non-finite tensor: %s; "+
				"stopped without updating the weights%s. The last good checkpoint is %s. Lower train.lr or set "+
				"train.skip_nonfinite = true to skip such steps",
				first, ErrNonFinite, w.BadLoss, math.Sqrt(w.BadNormSq)/float64(tr.A), tr.firstNonFinite(),
				noticed(first, tr.st.Step), tr.out.lastGood())
		}
		tr.st.Skipped += w.Bad
		tr.st.AdamStep -= w.Bad
	}
	tr.ctl.SetSettings(tr.schedule())
	return w, nil
}

// noticed says when a non-finite step was noticed, if later than the step itself.
func noticed(first, now int) string {
	if first == now {
		return ""
	}
	return fmt.Sprintf(" since (noticed at step %d, the read of train.log_every)", now)
}

// poison applies the test hook to the step about to end: a parameter name (model.Param.Name) sets element 0 of
// that parameter's accumulated gradient to the value; "loss" sets the loss of the first micro-batch; "" does
// nothing. It is how the tests poison a step with a NaN or Inf.
func (tr *trainer) poison() error {
	name, v := tr.inject(tr.st.Step + 1)
	switch name {
	case "":
		return nil
	case "loss":
		tr.be.Upload(tr.ctl.Loss(0), []float32{v})
		return nil
	}
	for _, p := range tr.table {
		if p.Name == name {
			tr.be.Upload(tr.be.Slice(tr.unet.Grads(), p.Offset, 1), []float32{v})
			return nil
		}
	}
	return fmt.Errorf("train: Inject: no parameter %q", name)
}

// firstNonFinite names the first tensor, in the model's table order, holding a NaN or Inf: the weights first (a
// blown-up weight is the cause when there is one), then the accumulated gradients (a run that stops keeps those of
// the bad step). It downloads both, so it runs only after a step has failed: the loop itself pays nothing for it.
func (tr *trainer) firstNonFinite() string {
	host := make([]float32, tr.unet.NumParams())
	for _, g := range []struct {
		what string
		buf  ops.Buf
	}{{"weight", tr.unet.Params()}, {"gradient of", tr.unet.Grads()}} {
		tr.be.Download(host, g.buf)
		if err := tr.be.Sync(); err != nil {
			return fmt.Sprintf("unknown (reading the %s tensors: %v)", g.what, err)
		}
		for _, p := range tr.table {
			for i, v := range host[p.Offset : p.Offset+p.Size] {
				if !finite(float64(v)) {
					return fmt.Sprintf("%s %s (element %d of shape %v is %v)", g.what, p.Name, i, p.Shape, v)
				}
			}
		}
	}
	return "none of the weights or gradients (only the loss is non-finite)"
}
