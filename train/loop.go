package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/ddpmgo/ddpm/progress"
)

// barEvery is how often the progress bar is redrawn (and, for it, the step controller read).
const barEvery = 100 * time.Millisecond

// loopState is what the loop keeps between steps: its start, its planned and done steps, the metrics window and the
// last redraw of the bar.
type loopState struct {
	start     time.Time
	total     int // planned final step (0: only time bounds the run)
	stepsHere int // steps this process took
	win       window
	lastBar   time.Time
}

// loop runs steps until a budget is spent, ctx is cancelled or the loss goes non-finite, with the cadence of
// train.log_every (a metrics line), train.checkpoint_every and train.sample_every, then writes the final outputs.
func (tr *trainer) loop(ctx context.Context) (Result, error) {
	tc := tr.cfg.Train
	res := Result{Loss: math.NaN()}
	pr := &loopState{start: time.Now(), total: tr.plannedSteps()}
	pr.win.start = pr.start
	if tr.bar != nil {
		tr.bar.SetTotal(pr.total)
	}
	for {
		stop, err := tr.agreedStop(tr.stopReason(ctx, pr.start))
		if err != nil {
			return res, err
		}
		if stop != "" {
			tr.log.Info("stopping", zap.String("reason", stop), zap.Int("step", tr.st.Step))
			res.Interrupted = stop == "interrupted"
			break
		}
		if err := tr.step(); err != nil {
			return res, err
		}
		pr.stepsHere++
		step := tr.st.Step

		stop, err = tr.agreedStop(tr.stopReason(ctx, pr.start))
		if err != nil {
			return res, err
		}
		last := stop != ""
		logNow := step%tc.LogEvery == 0 || step == 1 || last // step 1: the curve starts at the untrained loss
		ckptNow := tc.CheckpointEvery > 0 && step%tc.CheckpointEvery == 0
		barNow := tr.bar != nil && tr.bar.Active() && (time.Since(pr.lastBar) >= barEvery || last)
		// On several ranks only the log and checkpoint steps read (the bar's time-driven reads would let rank 0
		// notice a non-finite step before the others).
		if logNow || ckptNow || barNow && tr.ranks == 1 {
			if err := tr.readWindow(pr); err != nil {
				return res, err
			}
		}
		if logNow && !ckptNow {
			if err := tr.checkSame(fmt.Sprintf("step %d", step)); err != nil {
				return res, err
			}
		}
		if pr.win.steps > 0 && logNow {
			if err := tr.flush(pr, &res); err != nil {
				return res, err
			}
		}
		if barNow {
			pr.lastBar = time.Now()
			tr.bar.Update(step, fmt.Sprintf("epoch %.2f | loss %.4f | %.0f img/s", tr.epoch(), pr.win.smooth(),
				float64(pr.stepsHere*tr.B*tr.A)/pr.lastBar.Sub(pr.start).Seconds()))
		}
		if ckptNow {
			if err := tr.checkpoint(&res, false); err != nil {
				return res, err
			}
		}
		if tc.SampleEvery > 0 && step%tc.SampleEvery == 0 && !last {
			if err := tr.sampleGrid(ctx, &res); err != nil {
				return res, err
			}
		}
	}
	// Steps not read or logged yet: a budget or a signal that came between the checks.
	if err := tr.readWindow(pr); err != nil {
		return res, err
	}
	if pr.win.steps > 0 {
		if err := tr.flush(pr, &res); err != nil {
			return res, err
		}
	}
	if tr.bar != nil {
		tr.bar.Finish()
	}
	res.Elapsed = time.Since(pr.start)
	res.Step, res.Skipped = tr.st.Step, tr.st.Skipped
	return res, tr.finish(ctx, &res, pr.stepsHere)
}

// readWindow reads the step controller (step.go) and adds its window to the metrics window.
func (tr *trainer) readWindow(pr *loopState) error {
	w, err := tr.read()
	if err != nil {
		return err
	}
	if w.Bad > 0 {
		tr.log.Warn("skipped steps with a non-finite loss or gradient norm", zap.Int("first", tr.st.Step-w.Taken+w.FirstBad+1),
			zap.Float64("loss", w.BadLoss), zap.Float64("grad_norm", math.Sqrt(w.BadNormSq)/float64(tr.A)),
			zap.Int("in_window", w.Bad), zap.Int("step", tr.st.Step), zap.Int("skipped", tr.st.Skipped))
	}
	pr.win.add(w)
	return nil
}

// flush writes the metrics line of the steps since the previous one, and logs it.
func (tr *trainer) flush(pr *loopState, res *Result) error {
	tc := tr.cfg.Train
	now := time.Now()
	m := pr.win.line(now, tr.B*tr.A)
	m.Step, m.Epoch, m.LR = tr.st.Step, tr.epoch(), LR(tc.LR, tc.WarmupSteps, tr.st.AdamStep)
	m.ElapsedSec, m.Skipped, m.WriteErrors = now.Sub(pr.start).Seconds(), tr.st.Skipped, tr.out.writeErrors
	if err := tr.onRank0(func() error {
		if err := tr.metrics.write(m); err != nil {
			return tr.writeFailed(err)
		}
		return nil
	}); err != nil {
		return err
	}
	res.Loss = m.Loss
	fields := []zap.Field{zap.Int("step", m.Step), zap.Float64("epoch", round(m.Epoch, 3)), zap.Float64("loss", round(m.Loss, 5)),
		zap.Float64("lr", m.LR), zap.Float64("grad_norm", round(m.GradNorm, 4)), zap.Float64("images_per_sec", round(m.ImagesPerSec, 1))}
	if eta, ok := tr.eta(pr.start, pr.stepsHere, pr.total); ok {
		fields = append(fields, zap.String("eta", progress.FormatDuration(eta)))
	}
	tr.log.Info("train", fields...)
	return nil
}

// finish writes what a run leaves at its end: the final checkpoint and loss plot, then (unless interrupted) the
// sample grid and the EMA exports (the pipeline folder and unet_ema.safetensors). A run resumed after its budget was spent writes the outputs its predecessor did
// not (it died after the final checkpoint).
func (tr *trainer) finish(ctx context.Context, res *Result, stepsHere int) error {
	if stepsHere == 0 {
		res.Checkpoint = tr.out.lastCkpt
		switch {
		case res.Interrupted:
			tr.log.Info("interrupted before the first step; nothing written", zap.Int("step", tr.st.Step))
			return nil
		case tr.exportedAgreed():
			tr.log.Info("nothing to do: the budget was already spent", zap.Int("step", tr.st.Step))
			return nil
		}
		tr.log.Info("the budget was already spent; writing the final samples and EMA weights it did not", zap.Int("step", tr.st.Step))
		if err := tr.sampleGrid(ctx, res); err != nil {
			return err
		}
		return tr.exportEMA(res)
	}
	if tr.out.lastSave != tr.st.Step {
		if err := tr.checkpoint(res, true); err != nil {
			return err
		}
	}
	res.Checkpoint = tr.out.lastCkpt
	if err := tr.onRank0(tr.plotLoss); err != nil {
		return err
	}
	if res.Interrupted {
		tr.log.Info("interrupted: checkpoint written", zap.String("checkpoint", tr.out.lastCkpt), zap.Int("step", tr.st.Step))
		return nil
	}
	if err := tr.sampleGrid(ctx, res); err != nil {
		if ctx.Err() != nil || errors.Is(err, context.Canceled) { // here or on another rank
			res.Interrupted = true
			return nil
		}
		return err
	}
	if err := tr.exportEMA(res); err != nil {
		return err
	}
	tr.log.Info("done", zap.Int("step", res.Step), zap.Float64("loss", round(res.Loss, 5)),
		zap.Duration("elapsed", res.Elapsed.Round(time.Second)), zap.String("checkpoint", res.Checkpoint),
		zap.String("samples", res.Samples), zap.String("loss_plot", filepath.Join(tr.out.dir, LossPlot)))
	return nil
}

// stopReason names the budget that is spent, or "interrupted" when ctx is cancelled; "" while the run goes on.
func (tr *trainer) stopReason(ctx context.Context, start time.Time) string {
	tc := tr.cfg.Train
	switch {
	case tc.MaxSteps > 0 && tr.st.Step >= tc.MaxSteps:
		return "max_steps"
	case tc.Epochs > 0 && tr.ld.Position().Epoch >= tc.Epochs:
		return "epochs"
	case tc.MaxMinutes > 0 && time.Since(start).Minutes() >= tc.MaxMinutes:
		return "max_minutes"
	case ctx.Err() != nil:
		return "interrupted"
	}
	return ""
}

// eta extrapolates the time left from this process's rate: to the planned step (when step or epoch budgets bound
// the run) or to the time budget, whichever comes first.
func (tr *trainer) eta(start time.Time, stepsHere, total int) (time.Duration, bool) {
	el := time.Since(start)
	left := time.Duration(-1)
	if total > 0 && stepsHere > 0 {
		left = time.Duration(float64(el) / float64(stepsHere) * float64(max(total-tr.st.Step, 0)))
	}
	if mm := tr.cfg.Train.MaxMinutes; mm > 0 {
		if rest := time.Duration(mm*float64(time.Minute)) - el; left < 0 || rest < left {
			left = max(rest, 0)
		}
	}
	return left, left >= 0
}

// plannedSteps is the step at which the step and epoch budgets end (0 when only time bounds the run).
func (tr *trainer) plannedSteps() int {
	tc := tr.cfg.Train
	total := 0
	if tc.MaxSteps > 0 {
		total = tc.MaxSteps
	}
	if tc.Epochs > 0 {
		per := max(tr.ld.StepsPerEpoch()/tr.A, 1)
		if e := tc.Epochs * per; total == 0 || e < total {
			total = e
		}
	}
	return total
}

// epoch is the number of epochs done, with the fraction of the current one.
func (tr *trainer) epoch() float64 {
	p := tr.ld.Position()
	return float64(p.Epoch) + float64(p.Index)/float64(tr.nData)
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

func round(x float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(x*p) / p
}
