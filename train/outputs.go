package train

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/ddpmgo/ddpm/checkpoint"
	"github.com/ddpmgo/ddpm/diffusers"
	"github.com/ddpmgo/ddpm/imgio"
	"github.com/ddpmgo/ddpm/internal/atomicfile"
	"github.com/ddpmgo/ddpm/ops"
	"github.com/ddpmgo/ddpm/plot"
	"github.com/ddpmgo/ddpm/safetensors"
)

// outputs is what a run has written, for the write-failure policy and its messages.
type outputs struct {
	dir         string
	lastCkpt    string // the last checkpoint written or restored
	lastSave    int    // its step (−1: none)
	writeErrors int    // failed writes skipped under train.on_write_error = "continue"
}

// lastGood names the last checkpoint written or restored, for error messages.
func (o *outputs) lastGood() string {
	if o.lastCkpt == "" {
		return "none (no checkpoint was written yet)"
	}
	return o.lastCkpt
}

// writeFailed applies train.on_write_error to a failed write (a checkpoint, a sample grid, the loss plot, a metrics
// line): "stop" returns err, completed with the last good checkpoint; "continue" logs it, counts it (write_errors
// in metrics.jsonl) and returns nil, so that training goes on and the next write tries again.
func (tr *trainer) writeFailed(err error) error {
	o := &tr.out
	if tr.cfg.Train.OnWriteError == "continue" {
		o.writeErrors++
		tr.log.Error("write failed; training goes on (train.on_write_error = \"continue\")", zap.Error(err),
			zap.Int("write_errors", o.writeErrors), zap.String("last_good_checkpoint", o.lastGood()))
		return nil
	}
	return fmt.Errorf("%w; stopped (train.on_write_error = \"stop\"). The last good checkpoint is %s: free space or fix the disk and continue with -resume",
		err, o.lastGood())
}

// hostState downloads the full state for a checkpoint.
func (tr *trainer) hostState() *checkpoint.State {
	P := tr.unet.NumParams()
	st := &checkpoint.State{Step: tr.st.Step, AdamStep: tr.st.AdamStep, Skipped: tr.st.Skipped, Data: tr.ld.Position(),
		Seed: tr.seed, Config: tr.cfg.TOML()}
	for _, b := range []struct {
		dst *[]float32
		src ops.Buf
	}{{&st.Params, tr.unet.Params()}, {&st.EMA, tr.ema}, {&st.AdamM, tr.m}, {&st.AdamV, tr.v}} {
		*b.dst = make([]float32, P)
		tr.be.Download(*b.dst, b.src)
	}
	return st
}

// checkpoint saves the state (the caller has read the step controller, so the counters are exact), keeps the
// newest train.keep_checkpoints, and redraws the loss plot. A failed write leaves the previous checkpoint as it was
// (checkpoint.Save is atomic) and is handled by train.on_write_error, except for the final checkpoint of a run
// (final), whose failure is always an error: the run has nothing left to do, and its last steps would be lost
// silently. On several ranks the ranks first compare their weights (checkSame); rank 0 writes, and its outcome is
// every rank's.
func (tr *trainer) checkpoint(res *Result, final bool) error {
	if err := tr.be.Sync(); err != nil {
		return fmt.Errorf("train: checkpoint at step %d: %w", tr.st.Step, err)
	}
	if err := tr.checkSame(fmt.Sprintf("checkpoint at step %d", tr.st.Step)); err != nil {
		return err
	}
	var path string
	var err error
	if tr.rank == 0 {
		path, err = checkpoint.Save(checkpoint.Dir(tr.out.dir), tr.table, tr.hostState(), tr.cfg.Train.KeepCheckpoints)
		if err != nil {
			path, err = "", fmt.Errorf("train: step %d: %w", tr.st.Step, err)
			if final {
				err = fmt.Errorf("%w; the final checkpoint was not written, the last good checkpoint is %s (continue from it with -resume once the disk is fixed)",
					err, tr.out.lastGood())
			} else {
				err = tr.writeFailed(err)
			}
		} else {
			tr.metrics.sync()
		}
	}
	saved := []int64{0}
	if path != "" {
		saved[0] = 1
	}
	if err := tr.agreeFlags(err, saved); err != nil || saved[0] == 0 {
		return err // nil: the write failed and the run goes on (train.on_write_error = "continue")
	}
	if tr.rank != 0 {
		path = filepath.Join(checkpoint.Dir(tr.out.dir), checkpoint.Name(tr.st.Step))
	}
	tr.out.lastCkpt, tr.out.lastSave = path, tr.st.Step
	res.Checkpoint = path
	tr.log.Info("checkpoint", zap.Int("step", tr.st.Step), zap.String("path", path))
	return tr.onRank0(tr.plotLoss)
}

// sampleGrid draws sample.count images from the EMA weights and writes them as samples/step-NNNNNNNN.png. The EMA
// weights are swapped into the model and back by exact copies, so sampling leaves the training state untouched.
// On several ranks each draws its share of the images (the draws of image j depend on j alone, so the grid is the
// one a single process draws), rank 0 gathers them and writes the grid. An interruption on any rank returns an
// error wrapping context.Canceled on every rank.
func (tr *trainer) sampleGrid(ctx context.Context, res *Result) error {
	be, params := tr.be, tr.unet.Params()
	be.Copy(tr.swap, params)
	be.Copy(params, tr.ema)
	tr.unet.SetTrain(false, 0, 0)
	t0 := time.Now()
	n := tr.cfg.Sample.Count
	from, to := sampleShare(n, tr.rank, tr.ranks)
	if tr.ranks > 1 {
		clear(tr.sampleOut)
	}
	err := tr.smp.SampleRange(ctx, tr.unet, n, from, to, nil, tr.sampleOut, nil)
	be.Copy(params, tr.swap)
	if tr.ranks > 1 {
		code := []int64{0} // 1: interrupted, 2: failed
		if errors.Is(err, context.Canceled) {
			code[0] = 1
		} else if err != nil {
			code[0] = 2
		}
		if cerr := tr.col.MaxInt64(code); cerr != nil {
			return fmt.Errorf("train: sampling at step %d: %w", tr.st.Step, errors.Join(err, cerr))
		}
		switch {
		case err == nil && code[0] == 1:
			err = fmt.Errorf("another rank was interrupted: %w", context.Canceled)
		case err == nil && code[0] == 2:
			err = errors.New("another rank's sampling failed (its log says why)")
		}
		if err == nil {
			err = tr.col.SumFloat32(tr.sampleOut) // each image is non-zero on one rank only: the sum gathers them
		}
	}
	if err != nil {
		return fmt.Errorf("train: sampling at step %d: %w", tr.st.Step, err)
	}
	return tr.onRank0(func() error {
		dir := filepath.Join(tr.out.dir, SamplesDir)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("train: %w", err)
		}
		path := filepath.Join(dir, fmt.Sprintf("step-%08d.png", tr.st.Step))
		err := atomicfile.Write(path, func(w io.Writer) error { return imgio.WriteGridPNG(w, tr.sampleOut, n, tr.C, tr.S, tr.S) })
		if err != nil {
			return tr.writeFailed(fmt.Errorf("train: samples at step %d: %w", tr.st.Step, err))
		}
		res.Samples = path
		tr.log.Info("samples", zap.Int("step", tr.st.Step), zap.String("path", path), zap.String("sampler", tr.cfg.Sample.Sampler),
			zap.Int("sampler_steps", len(tr.smp.Timesteps())), zap.Int("network_evals", tr.smp.Evals()),
			zap.Duration("took", time.Since(t0).Round(time.Millisecond)))
		return nil
	})
}

// exported says whether the run directory's exports (the pipeline folder and unet_ema.safetensors) are those of the
// current step.
func (tr *trainer) exported() bool {
	for _, p := range []string{filepath.Join(tr.out.dir, PipelineDir, diffusers.UNetDir, diffusers.WeightsFile), filepath.Join(tr.out.dir, EMAWeights)} {
		f, err := safetensors.ReadFile(p)
		if err != nil || f.Metadata["step"] != fmt.Sprint(tr.st.Step) {
			return false
		}
	}
	return true
}

// exportEMA writes the EMA weights as a diffusers pipeline folder (pipeline/: model_index.json, unet/config.json and
// the weights, scheduler/scheduler_config.json, with this step's sample grid and the loss plot when they exist),
// for DDPMPipeline.from_pretrained, and then alone under diffusers' names (unet_ema.safetensors), the file to load
// into a PyTorch UNet2DModel. unet_ema.safetensors comes last: its step marks the exports done (exported). Rank 0
// writes; its outcome is every rank's.
func (tr *trainer) exportEMA(res *Result) error {
	return tr.onRank0(func() error { return tr.writeExports(res) })
}

// exportedAgreed is exported as rank 0 sees it, on every rank.
func (tr *trainer) exportedAgreed() bool {
	done := []int64{0}
	if tr.rank == 0 && tr.exported() {
		done[0] = 1
	}
	if tr.ranks > 1 && tr.col.MaxInt64(done) != nil {
		return false // the next collective reports the failure
	}
	return done[0] == 1
}

func (tr *trainer) writeExports(res *Result) error {
	host := make([]float32, tr.unet.NumParams())
	tr.be.Download(host, tr.ema)
	step := fmt.Sprint(tr.st.Step)
	var extras []diffusers.Extra
	if res.Samples != "" && filepath.Base(res.Samples) == fmt.Sprintf("step-%08d.png", tr.st.Step) {
		extras = append(extras, diffusers.Extra{Name: "samples.png", Path: res.Samples})
	}
	if plot := filepath.Join(tr.out.dir, LossPlot); fileExists(plot) {
		extras = append(extras, diffusers.Extra{Name: LossPlot, Path: plot})
	}
	pipe := filepath.Join(tr.out.dir, PipelineDir)
	err := diffusers.Write(pipe, diffusers.Pipeline{Config: tr.cfg, Table: tr.table, Weights: host,
		Meta: map[string]string{"step": step, "weights": "ema"}, Extras: extras})
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	ts := make([]safetensors.Tensor, len(tr.table))
	for i, p := range tr.table {
		ts[i] = safetensors.Tensor{Name: p.Name, Shape: p.Shape, Data: host[p.Offset : p.Offset+p.Size]}
	}
	path := filepath.Join(tr.out.dir, EMAWeights)
	err = atomicfile.Write(path, func(w io.Writer) error {
		return safetensors.Write(w, ts, map[string]string{"format": "pt", "step": step, "weights": "ema"})
	})
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	tr.log.Info("exported", zap.String("pipeline", pipe), zap.String("ema_weights", path))
	return nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// plotLoss redraws loss.png from the metrics so far.
func (tr *trainer) plotLoss() error {
	h := tr.metrics.history
	steps, losses := make([]int, len(h)), make([]float64, len(h))
	for i, m := range h {
		steps[i], losses[i] = m.Step, m.Loss
	}
	path := filepath.Join(tr.out.dir, LossPlot)
	if err := atomicfile.Write(path, func(w io.Writer) error { return plot.Loss(w, steps, losses, 800, 480) }); err != nil {
		return tr.writeFailed(fmt.Errorf("train: loss plot: %w", err))
	}
	return nil
}
