// Package train is the training loop of DDPM (Ho et al. 2020, Algorithm 1) written against ops.Backend: ε-prediction
// with the simple MSE loss, AdamW with decoupled weight decay and bias correction, clipping by global gradient norm,
// linear learning-rate warm-up, gradient accumulation, an EMA of the weights, budgets in steps, epochs and minutes,
// and a run directory holding the resolved config, metrics, a loss plot, sample grids and atomic, resumable
// safetensors checkpoints.
//
// # One step
//
// Step s (0-based: s steps are done before it) runs A = train.grad_accum micro-batches of B = train.batch_size
// images of D = C·H·W elements. Micro-batch k has the global counter g = s·A + k, and every random number it uses is
// a pure function of (train.seed, stream, counter):
//
//	x0      the data Loader's next batch (its own counters: epoch order and flips, see package data)
//	t_i     rng.Intn(seed, rng.StreamTimestep, g·B + i, T)             uniform in {0, …, T−1}, i < B
//	ε       backend Normal(seed, rng.StreamNoise, offset g·B·D)         B·D standard normals
//	x_t     QSample: √ᾱ_t·x0 + √(1−ᾱ_t)·ε
//	ε̂       U-Net(x_t, t), dropout masks at rng position g (model.SetTrain(true, seed, g))
//	loss_k  MSE(ε̂, ε);  gradients accumulate over the A micro-batches
//
// then, with G the accumulated gradient (the sum of the A micro-batch mean gradients) and ‖g‖ = ‖G‖/A the norm of
// their average: clip = min(1, grad_clip/(‖g‖ + 1e-6)), AdamW with GradScale = clip/A and the warmed-up learning
// rate, the EMA update, and zeroed gradients. So the RNG position of a run is just its step counter, and a resumed
// run draws exactly what an uninterrupted one would.
//
// # Host reads
//
// On the CPU backend (the host path) AdamW takes the clipping factor from the host, so every step downloads one
// small buffer: ‖G‖² (SumSquares) and the A micro-batch losses, adjacent in one device allocation (one transfer, one
// synchronisation). The same numbers serve the NaN/Inf check of every step and the loss averages of the metrics.
// On a GPU backend (the device path, devstep.go) the clipping factor, the NaN/Inf check and the loss sums stay on
// the device, and a step copies nothing between host and device: the host reads the window statistics only every
// train.log_every steps, at checkpoints and at the end (a NaN/Inf is then noticed up to log_every steps late, but no
// update happens after it). Nothing else leaves the device inside the loop, and the loop allocates nothing.
package train

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"go.uber.org/zap"

	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/data"
	"github.com/ddpmgo/ddpm/diffusion"
	"github.com/ddpmgo/ddpm/imgio"
	"github.com/ddpmgo/ddpm/model"
	"github.com/ddpmgo/ddpm/ops"
	"github.com/ddpmgo/ddpm/plot"
	"github.com/ddpmgo/ddpm/progress"
	"github.com/ddpmgo/ddpm/rng"
	"github.com/ddpmgo/ddpm/safetensors"
	"github.com/ddpmgo/ddpm/sampler"
)

// Options configure a run beyond its Config.
type Options struct {
	Backend    ops.Backend   // required
	Log        *zap.Logger   // nil: no logging
	Resume     bool          // continue from the run directory's latest checkpoint
	ResumeFrom string        // continue from this checkpoint (takes precedence over Resume)
	Dataset    data.Dataset  // nil: load cfg.Data; tests pass images held in memory
	Bar        *progress.Bar // nil: no progress bar

	// Inject, when set (tests only), is called once per step, after the backward pass and before the NaN/Inf
	// check, with the step's 1-based number. Returning a parameter name (model.Param.Name) sets element 0 of that
	// parameter's accumulated gradient to value; "loss" sets the loss of the first micro-batch; "" does nothing.
	// It is how the tests poison a step with a NaN or Inf.
	Inject func(step int) (name string, value float32)
}

// Result says how a run ended.
type Result struct {
	Step        int           // optimizer steps done in total (resumed ones included)
	Loss        float64       // mean loss of the last logged window (NaN if none)
	Checkpoint  string        // the last checkpoint written ("" if none)
	Samples     string        // the last sample grid written ("" if none)
	Skipped     int           // steps skipped for a non-finite loss
	Interrupted bool          // stopped by ctx (SIGINT/SIGTERM) after checkpointing
	Elapsed     time.Duration // wall-clock time of this process's loop
}

// Files of a run directory.
const (
	ConfigFile  = "config.toml"
	MetricsFile = "metrics.jsonl"
	LossPlot    = "loss.png"
	SamplesDir  = "samples"
	EMAWeights  = "unet_ema.safetensors" // the EMA weights alone, diffusers names, written at the end
)

// Metrics is one line of metrics.jsonl, written after step 1, every train.log_every steps and after the last step.
type Metrics struct {
	Step         int     `json:"step"`
	Epoch        float64 `json:"epoch"`                  // epochs done, with the fraction of the current one
	Loss         float64 `json:"loss"`                   // mean ε-MSE over the steps since the previous line
	LR           float64 `json:"lr"`                     // learning rate of the last step
	GradNorm     float64 `json:"grad_norm"`              // mean global gradient norm (before clipping) over those steps
	ImagesPerSec float64 `json:"images_per_sec"`         // training images per second over those steps
	ElapsedSec   float64 `json:"elapsed_s"`              // wall-clock seconds since this process started the loop
	Skipped      int     `json:"skipped,omitempty"`      // steps skipped so far for a NaN/Inf (train.skip_nonfinite)
	WriteErrors  int     `json:"write_errors,omitempty"` // failed writes so far (train.on_write_error = "continue")
}

// ErrNonFinite is wrapped by the error of a run stopped by a NaN or Inf loss.
var ErrNonFinite = errors.New("non-finite loss")

// trainer is the state of one run.
type trainer struct {
	cfg   config.Config
	be    ops.Backend
	log   *zap.Logger
	bar   *progress.Bar
	unet  *model.UNet
	table []model.Param
	ld    *data.Loader
	nData int
	host  *diffusion.Schedule
	sch   *ops.Schedule
	smp   *sampler.Sampler

	B, A, C, S, D, T int
	seed             uint64

	// Device buffers, allocated once.
	x0, eps, xt, dout, tBuf ops.Buf
	scalars, gsq            ops.Buf   // [‖G‖², loss_0 … loss_{A−1}]
	losses                  []ops.Buf // views of scalars
	m, v, ema, swap         ops.Buf

	// Host buffers, allocated once.
	batch, tHost, scalarsHost, sampleOut []float32
	feed                                 *deviceFeed // nil: batches come from the host (resident.go)
	dev                                  *devStep    // nil: clipping, NaN check and metrics on the host (devstep.go)

	st       State // Step, AdamStep, Skipped (the rest is filled when saving)
	lastCkpt string
	lastSave int // step of the last checkpoint (−1: none)
	metricsF *os.File
	history  []Metrics

	inject      func(step int) (string, float32)
	writeErrors int // failed writes skipped under train.on_write_error = "continue"
}

// Run trains cfg on opt.Backend until a budget is spent or ctx is cancelled, writing everything into cfg.Run.Dir.
// Cancellation (SIGINT/SIGTERM in bin/train) finishes the current step, writes a checkpoint and returns a Result
// with Interrupted set and a nil error. A NaN or Inf loss returns an error wrapping ErrNonFinite that names the step
// and the last good checkpoint (unless train.skip_nonfinite).
func Run(ctx context.Context, cfg config.Config, opt Options) (res Result, err error) {
	res.Loss = math.NaN()
	if opt.Backend == nil {
		return res, errors.New("train: no backend")
	}
	log := opt.Log
	if log == nil {
		log = zap.NewNop()
	}
	log.Info("resolved config", zap.String("run", cfg.Run.Name), zap.String("dir", cfg.Run.Dir),
		zap.String("backend", opt.Backend.Name()), configField(cfg))

	tr, err := setup(cfg, opt, log)
	if err != nil {
		return res, err
	}
	defer tr.close()
	return tr.loop(ctx)
}

// setup loads the data, builds the model and its buffers, and initialises or restores the state.
func setup(cfg config.Config, opt Options, log *zap.Logger) (*trainer, error) {
	tc := cfg.Train
	tr := &trainer{cfg: cfg, be: opt.Backend, log: log, bar: opt.Bar, lastSave: -1, inject: opt.Inject,
		B: tc.BatchSize, A: tc.GradAccum, C: cfg.Data.Channels, S: cfg.Data.ImageSize, T: cfg.Diffusion.Timesteps, seed: tc.Seed}
	tr.D = tr.C * tr.S * tr.S
	dir := cfg.Run.Dir
	ckdir := CheckpointDir(dir)

	resumeFrom := opt.ResumeFrom
	if resumeFrom == "" && opt.Resume {
		resumeFrom = filepath.Join(ckdir, LatestName)
		if _, err := os.Stat(resumeFrom); err != nil {
			return nil, fmt.Errorf("train: -resume: no checkpoint %s in run directory %s (start without -resume, or use -resume-from PATH)", resumeFrom, dir)
		}
	}
	if resumeFrom == "" {
		if _, err := os.Stat(filepath.Join(ckdir, LatestName)); err == nil {
			return nil, fmt.Errorf("train: run directory %s already holds checkpoints; continue it with -resume, or start afresh with another run.dir (-set run.dir=...) or after deleting it", dir)
		}
	}

	ds := opt.Dataset
	if ds == nil {
		var err error
		if ds, err = openDataset(cfg.Data, log); err != nil {
			return nil, err
		}
	}
	if c, h, w := ds.Shape(); c != tr.C || h != tr.S || w != tr.S {
		return nil, fmt.Errorf("train: data set images are %dx%dx%d, the config wants %dx%dx%d (data.channels × data.image_size²)", c, h, w, tr.C, tr.S, tr.S)
	}
	tr.nData = ds.Len()
	mem, err := EstimateMemory(cfg, tr.be, tr.nData)
	if err != nil {
		return nil, err
	}
	if err := mem.Check(); err != nil {
		return nil, err
	}
	ld, err := data.NewLoader(ds, tr.B, tr.seed, cfg.Data.Flip)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	tr.ld = ld

	host, err := diffusion.New(cfg.Diffusion.Schedule, tr.T, cfg.Diffusion.BetaStart, cfg.Diffusion.BetaEnd)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	tr.host = host
	if tr.sch, err = sampler.UploadSchedule(tr.be, host, cfg.Sample.Variance); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	unet, err := model.New(tr.be, cfg.Model, tr.C, tr.S, tr.B)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	tr.unet, tr.table = unet, unet.Table()
	P := unet.NumParams()
	sampleBatch := min(cfg.Sample.Count, tr.B)
	tr.smp, err = sampler.New(tr.be, host, samplerOptions(cfg), sampleBatch, tr.D)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}

	be := tr.be
	tr.x0, tr.eps, tr.xt, tr.dout = be.Alloc(tr.B*tr.D), be.Alloc(tr.B*tr.D), be.Alloc(tr.B*tr.D), be.Alloc(tr.B*tr.D)
	tr.tBuf = be.Alloc(tr.B)
	tr.scalars = be.Alloc(1 + tr.A)
	tr.gsq = be.Slice(tr.scalars, 0, 1)
	for k := 0; k < tr.A; k++ {
		tr.losses = append(tr.losses, be.Slice(tr.scalars, 1+k, 1))
	}
	tr.m, tr.v, tr.ema, tr.swap = be.Alloc(P), be.Alloc(P), be.Alloc(P), be.Alloc(P)
	tr.batch = make([]float32, tr.B*tr.D)
	tr.tHost = make([]float32, tr.B)
	tr.scalarsHost = make([]float32, 1+tr.A)
	tr.sampleOut = make([]float32, cfg.Sample.Count*tr.D)
	if tr.feed, err = newDeviceFeed(tr, ds, log); err != nil { // resident.go
		return nil, err
	}
	tr.dev = newDevStep(tr) // devstep.go

	if err := os.MkdirAll(ckdir, 0o755); err != nil {
		return nil, fmt.Errorf("train: run directory: %w", err)
	}
	removeStaleTemps(log, dir, ckdir, filepath.Join(dir, SamplesDir))
	if resumeFrom != "" {
		if err := tr.restore(resumeFrom); err != nil {
			return nil, err
		}
	} else {
		unet.Init(tr.seed)
		be.Copy(tr.ema, unet.Params()) // the average starts at the initial weights, as diffusers' EMAModel
	}
	if err := writeFileAtomic(filepath.Join(dir, ConfigFile), []byte(cfg.TOML())); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	if err := tr.openMetrics(resumeFrom != ""); err != nil {
		return nil, err
	}
	_, params, bytes := model.Summary(cfg.Model, tr.C, tr.S, tr.B)
	log.Info("model", zap.Int("params", params), zap.Int64("train_step_bytes", bytes),
		zap.Int("images", tr.nData), zap.Int("steps_per_epoch", ld.StepsPerEpoch()/tr.A))
	return tr, nil
}

// samplerOptions are the sampler settings of cfg, seeded by train.seed.
func samplerOptions(cfg config.Config) sampler.Options {
	s := cfg.Sample
	return sampler.Options{Sampler: s.Sampler, Steps: s.Steps, Eta: s.Eta, Clip: s.Clip, Variance: s.Variance, Seed: cfg.Train.Seed}
}

// restore loads a checkpoint into the model, the optimizer, the EMA, the Loader and the counters.
func (tr *trainer) restore(path string) error {
	st, err := ReadCheckpoint(path, tr.table)
	if err != nil {
		return fmt.Errorf("train: resume: %w", err)
	}
	if err := checkResumable(path, st.Config, tr.cfg, tr.log); err != nil {
		return err
	}
	be := tr.be
	be.Upload(tr.unet.Params(), st.Params)
	be.Upload(tr.ema, st.EMA)
	be.Upload(tr.m, st.AdamM)
	be.Upload(tr.v, st.AdamV)
	if err := tr.ld.Seek(st.Data); err != nil {
		return fmt.Errorf("train: resume from %s: %w", path, err)
	}
	tr.st = State{Step: st.Step, AdamStep: st.AdamStep, Skipped: st.Skipped}
	tr.lastCkpt, tr.lastSave = path, st.Step
	tr.log.Info("resumed", zap.String("checkpoint", path), zap.Int("step", st.Step),
		zap.Int("data_epoch", st.Data.Epoch), zap.Int("data_index", st.Data.Index))
	return nil
}

// checkResumable refuses a checkpoint whose model or diffusion process differs from cfg (its weights would not fit
// or would mean something else) and warns about settings that make the continuation differ from a run that never
// stopped.
func checkResumable(path, saved string, cfg config.Config, log *zap.Logger) error {
	old, err := config.Parse(path, []byte(saved), nil)
	if err != nil {
		return fmt.Errorf("train: resume: checkpoint %s: its config does not parse: %w", path, err)
	}
	if !reflect.DeepEqual(old.Model, cfg.Model) {
		return fmt.Errorf("train: resume: checkpoint %s was trained with [model] %+v, the config says %+v", path, old.Model, cfg.Model)
	}
	if !reflect.DeepEqual(old.Diffusion, cfg.Diffusion) {
		return fmt.Errorf("train: resume: checkpoint %s was trained with [diffusion] %+v, the config says %+v", path, old.Diffusion, cfg.Diffusion)
	}
	if old.Data.Channels != cfg.Data.Channels || old.Data.ImageSize != cfg.Data.ImageSize {
		return fmt.Errorf("train: resume: checkpoint %s was trained on %d-channel %dpx images, the config says %d-channel %dpx",
			path, old.Data.Channels, old.Data.ImageSize, cfg.Data.Channels, cfg.Data.ImageSize)
	}
	o, n := old.Train, cfg.Train
	if o.Seed != n.Seed || o.BatchSize != n.BatchSize || o.GradAccum != n.GradAccum ||
		old.Data.Path != cfg.Data.Path || old.Data.MaxItems != cfg.Data.MaxItems || old.Data.Flip != cfg.Data.Flip {
		log.Warn("resuming with different seed, batch, accumulation or data settings: the continuation will not match a run that never stopped",
			zap.String("checkpoint", path))
	}
	return nil
}

// loop runs steps until a budget is spent, ctx is cancelled or the loss goes non-finite.
func (tr *trainer) loop(ctx context.Context) (Result, error) {
	tc := tr.cfg.Train
	res := Result{Loss: math.NaN()}
	start := time.Now()
	total := tr.plannedSteps()
	if tr.bar != nil {
		tr.bar.SetTotal(total)
	}
	var (
		winLoss, winNorm float64
		winSteps         int
		winStart         = start
		smooth           = math.NaN()
		smoothSum        float64
		smoothW          float64
		lastBar          time.Time
		lr               float64
		stepsHere        int
	)
	// flush writes the metrics line of the steps since the previous one.
	flush := func() error {
		now := time.Now()
		m := Metrics{
			Step: tr.st.Step, Epoch: tr.epoch(), Loss: winLoss / float64(winSteps), LR: lr, GradNorm: winNorm / float64(winSteps),
			ImagesPerSec: float64(winSteps*tr.B*tr.A) / now.Sub(winStart).Seconds(),
			ElapsedSec:   now.Sub(start).Seconds(), Skipped: tr.st.Skipped, WriteErrors: tr.writeErrors,
		}
		if err := tr.writeMetrics(m); err != nil {
			if err := tr.writeFailed(err); err != nil {
				return err
			}
		}
		res.Loss = m.Loss
		fields := []zap.Field{zap.Int("step", m.Step), zap.Float64("epoch", round(m.Epoch, 3)), zap.Float64("loss", round(m.Loss, 5)),
			zap.Float64("lr", m.LR), zap.Float64("grad_norm", round(m.GradNorm, 4)), zap.Float64("images_per_sec", round(m.ImagesPerSec, 1))}
		if eta, ok := tr.eta(start, stepsHere, total); ok {
			fields = append(fields, zap.String("eta", progress.FormatDuration(eta)))
		}
		tr.log.Info("train", fields...)
		winLoss, winNorm, winSteps, winStart = 0, 0, 0, now
		return nil
	}
	// hostStep is a step of the host path: its loss and gradient norm are read, checked and added every step.
	hostStep := func() error {
		loss, gnorm, err := tr.step()
		if err != nil {
			return err
		}
		stepsHere++
		if !finite(loss) || !finite(gnorm) {
			if !tc.SkipNonfinite {
				last := tr.lastCkpt
				if last == "" {
					last = "none (no checkpoint was written yet)"
				}
				return fmt.Errorf("train: step %d: %w (loss %v, gradient norm %v); first non-finite tensor: %s; "+
					"stopped without updating the weights. The last good checkpoint is %s. Lower train.lr or set "+
					"train.skip_nonfinite = true to skip such steps",
					tr.st.Step+1, ErrNonFinite, loss, gnorm, tr.firstNonFinite(), last)
			}
			first := tr.firstNonFinite()
			tr.unet.ZeroGrads()
			tr.st.Step++
			tr.st.Skipped++
			tr.log.Warn("skipped a step with a non-finite loss", zap.Int("step", tr.st.Step), zap.Float64("loss", loss),
				zap.Float64("grad_norm", gnorm), zap.String("first_non_finite", first), zap.Int("skipped", tr.st.Skipped))
		} else {
			lr = tr.update(gnorm)
			winLoss += loss
			winNorm += gnorm
			winSteps++
			// The bar's loss: an exponential average over ~50 steps, bias-corrected as Adam's moments so that
			// it is not dragged towards its zero start.
			smoothSum = 0.98*smoothSum + 0.02*loss
			smoothW = 0.98*smoothW + 0.02
			smooth = smoothSum / smoothW
		}
		return nil
	}
	// readDev adds the window of the device path (devstep.go) since its previous read to the metrics window.
	readDev := func() error {
		w, err := tr.readDev()
		if err != nil {
			return err
		}
		if w.bad > 0 {
			tr.log.Warn("skipped steps with a non-finite loss or gradient norm", zap.Int("first", w.firstBad),
				zap.Float64("loss", w.badLoss), zap.Float64("grad_norm", w.badNorm), zap.Int("in_window", w.bad),
				zap.Int("step", tr.st.Step), zap.Int("skipped", tr.st.Skipped))
		}
		if w.steps > 0 {
			winLoss += w.loss
			winNorm += w.norm
			winSteps += w.steps
			// The bar's average, as if each step of the window had had the window's mean loss.
			f := math.Pow(0.98, float64(w.steps))
			smoothSum = f*smoothSum + (1-f)*w.loss/float64(w.steps)
			smoothW = f*smoothW + (1 - f)
			smooth = smoothSum / smoothW
		}
		return nil
	}
	for {
		stop := ""
		switch {
		case tc.MaxSteps > 0 && tr.st.Step >= tc.MaxSteps:
			stop = "max_steps"
		case tc.Epochs > 0 && tr.ld.Position().Epoch >= tc.Epochs:
			stop = "epochs"
		case tc.MaxMinutes > 0 && time.Since(start).Minutes() >= tc.MaxMinutes:
			stop = "max_minutes"
		case ctx.Err() != nil:
			stop = "interrupted"
		}
		if stop != "" {
			tr.log.Info("stopping", zap.String("reason", stop), zap.Int("step", tr.st.Step))
			res.Interrupted = stop == "interrupted"
			break
		}

		if tr.dev != nil {
			var err error
			if lr, err = tr.stepDev(); err != nil {
				return res, err
			}
			stepsHere++
		} else if err := hostStep(); err != nil {
			return res, err
		}
		step := tr.st.Step

		last := tr.budgetReached(start) || ctx.Err() != nil
		logNow := step%tc.LogEvery == 0 || step == 1 || last // step 1: the curve starts at the untrained loss
		if tr.dev != nil && (logNow || (tc.CheckpointEvery > 0 && step%tc.CheckpointEvery == 0)) {
			if err := readDev(); err != nil {
				return res, err
			}
		}
		if winSteps > 0 && logNow {
			if err := flush(); err != nil {
				return res, err
			}
		}
		if tr.bar != nil && tr.bar.Active() {
			if now := time.Now(); now.Sub(lastBar) >= 100*time.Millisecond || last {
				lastBar = now
				tr.bar.Update(step, fmt.Sprintf("epoch %.2f | loss %.4f | %.0f img/s", tr.epoch(), smooth,
					float64(stepsHere*tr.B*tr.A)/now.Sub(start).Seconds()))
			}
		}
		if tc.CheckpointEvery > 0 && step%tc.CheckpointEvery == 0 {
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
	if tr.dev != nil { // steps not read yet (a budget or a signal that came between the checks)
		if err := readDev(); err != nil {
			return res, err
		}
	}
	if winSteps > 0 { // steps after the last line (a budget or a signal that came between the checks)
		if err := flush(); err != nil {
			return res, err
		}
	}
	if tr.bar != nil {
		tr.bar.Finish()
	}
	res.Elapsed = time.Since(start)
	res.Step, res.Skipped = tr.st.Step, tr.st.Skipped
	if stepsHere == 0 {
		res.Checkpoint = tr.lastCkpt
		if res.Interrupted {
			tr.log.Info("interrupted before the first step; nothing written", zap.Int("step", tr.st.Step))
			return res, nil
		}
		if tr.exported() {
			tr.log.Info("nothing to do: the budget was already spent", zap.Int("step", tr.st.Step))
			return res, nil
		}
		// The process that spent the budget died after its final checkpoint but before the final outputs.
		tr.log.Info("the budget was already spent; writing the final samples and EMA weights it did not", zap.Int("step", tr.st.Step))
		if err := tr.sampleGrid(ctx, &res); err != nil {
			return res, err
		}
		return res, tr.exportEMA()
	}
	if tr.lastSave != tr.st.Step {
		if err := tr.checkpoint(&res, true); err != nil {
			return res, err
		}
	}
	res.Checkpoint = tr.lastCkpt
	if err := tr.plotLoss(); err != nil {
		return res, err
	}
	if res.Interrupted {
		tr.log.Info("interrupted: checkpoint written", zap.String("checkpoint", tr.lastCkpt), zap.Int("step", tr.st.Step))
		return res, nil
	}
	if err := tr.sampleGrid(ctx, &res); err != nil {
		if ctx.Err() != nil {
			res.Interrupted = true
			return res, nil
		}
		return res, err
	}
	if err := tr.exportEMA(); err != nil {
		return res, err
	}
	tr.log.Info("done", zap.Int("step", res.Step), zap.Float64("loss", round(res.Loss, 5)),
		zap.Duration("elapsed", res.Elapsed.Round(time.Second)), zap.String("checkpoint", res.Checkpoint),
		zap.String("samples", res.Samples), zap.String("loss_plot", filepath.Join(tr.cfg.Run.Dir, LossPlot)))
	return res, nil
}

// budgetReached says whether the step just done is the last one (so that the metrics line and bar are final).
func (tr *trainer) budgetReached(start time.Time) bool {
	tc := tr.cfg.Train
	return (tc.MaxSteps > 0 && tr.st.Step >= tc.MaxSteps) ||
		(tc.Epochs > 0 && tr.ld.Position().Epoch >= tc.Epochs) ||
		(tc.MaxMinutes > 0 && time.Since(start).Minutes() >= tc.MaxMinutes)
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

// step runs the forward and backward passes of one optimizer step (see the package doc) and returns the mean
// loss and the global gradient norm ‖G‖/A. It does not update the weights.
func (tr *trainer) step() (loss, gnorm float64, err error) {
	be, A := tr.be, tr.A
	if err := tr.forwardBackward(); err != nil {
		return 0, 0, err
	}
	be.SumSquares(tr.unet.Grads(), tr.gsq)
	be.Download(tr.scalarsHost, tr.scalars)
	if err := be.Sync(); err != nil {
		return 0, 0, fmt.Errorf("train: step %d on %s: %w", tr.st.Step+1, be.Name(), err)
	}
	for _, l := range tr.scalarsHost[1:] {
		loss += float64(l)
	}
	loss /= float64(A)
	gnorm = math.Sqrt(float64(tr.scalarsHost[0])) / float64(A)
	return loss, gnorm, nil
}

// forwardBackward runs the A micro-batches of the next step (see the package doc), leaving their losses in
// tr.losses and the sum of their mean gradients in the model's gradients, and applies Options.Inject.
func (tr *trainer) forwardBackward() error {
	be, B, A, D := tr.be, tr.B, tr.A, tr.D
	for k := 0; k < A; k++ {
		g := uint64(tr.st.Step)*uint64(A) + uint64(k)
		if err := tr.nextBatch(g); err != nil { // x0 and t (resident.go)
			return err
		}
		be.Normal(tr.seed, rng.StreamNoise, g*uint64(B)*uint64(D), tr.eps)
		be.QSample(tr.sch, B, D, tr.tBuf, tr.x0, tr.eps, tr.xt)
		tr.unet.SetTrain(true, tr.seed, g)
		pred := tr.unet.Forward(tr.xt, tr.tBuf, B)
		be.MSE(pred, tr.eps, tr.losses[k])
		be.Fill(tr.dout, 0)
		be.MSEBackward(1, pred, tr.eps, tr.dout)
		tr.unet.Backward(tr.dout)
	}
	if tr.inject != nil {
		return tr.poison()
	}
	return nil
}

// update applies clipping, AdamW and the EMA to the accumulated gradients, zeroes them and advances the counters.
// It returns the learning rate used.
func (tr *trainer) update(gnorm float64) float64 {
	tc := tr.cfg.Train
	tr.st.Step++
	tr.st.AdamStep++
	k := tr.st.AdamStep
	lr := LR(tc.LR, tc.WarmupSteps, k)
	clip := ClipScale(tc.GradClip, gnorm)
	tr.be.AdamWStep(ops.AdamW{
		LR: float32(lr), Beta1: float32(tc.AdamBeta1), Beta2: float32(tc.AdamBeta2), Eps: float32(tc.AdamEps),
		WeightDecay: float32(tc.WeightDecay), GradScale: float32(clip / float64(tr.A)), Step: k,
	}, tr.unet.Params(), tr.unet.Grads(), tr.m, tr.v)
	tr.be.EMA(float32(EMADecay(tc.EMADecay, tc.EMAWarmup, k)), tr.ema, tr.unet.Params())
	tr.unet.ZeroGrads()
	return lr
}

// hostState downloads the full state for a checkpoint.
func (tr *trainer) hostState() *State {
	P := tr.unet.NumParams()
	st := &State{Step: tr.st.Step, AdamStep: tr.st.AdamStep, Skipped: tr.st.Skipped, Data: tr.ld.Position(),
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

// checkpoint saves the state, keeps the newest train.keep_checkpoints, and redraws the loss plot. A failed write
// leaves the previous checkpoint as it was (SaveCheckpoint is atomic) and is handled by train.on_write_error,
// except for the final checkpoint of a run (final), whose failure is always an error: the run has nothing left to
// do, and its last steps would be lost silently.
func (tr *trainer) checkpoint(res *Result, final bool) error {
	if err := tr.be.Sync(); err != nil {
		return fmt.Errorf("train: checkpoint at step %d: %w", tr.st.Step, err)
	}
	path, err := SaveCheckpoint(CheckpointDir(tr.cfg.Run.Dir), tr.table, tr.hostState(), tr.cfg.Train.KeepCheckpoints)
	if err != nil {
		err = fmt.Errorf("train: step %d: %w", tr.st.Step, err)
		if final {
			return fmt.Errorf("%w; the final checkpoint was not written, the last good checkpoint is %s (continue from it with -resume once the disk is fixed)",
				err, tr.lastGood())
		}
		return tr.writeFailed(err)
	}
	if tr.metricsF != nil {
		tr.metricsF.Sync()
	}
	tr.lastCkpt, tr.lastSave = path, tr.st.Step
	res.Checkpoint = path
	tr.log.Info("checkpoint", zap.Int("step", tr.st.Step), zap.String("path", path))
	return tr.plotLoss()
}

// sampleGrid draws sample.count images from the EMA weights and writes them as samples/step-NNNNNNNN.png. The EMA
// weights are swapped into the model and back by exact copies, so sampling leaves the training state untouched.
func (tr *trainer) sampleGrid(ctx context.Context, res *Result) error {
	be, params := tr.be, tr.unet.Params()
	be.Copy(tr.swap, params)
	be.Copy(params, tr.ema)
	tr.unet.SetTrain(false, 0, 0)
	t0 := time.Now()
	n := tr.cfg.Sample.Count
	err := tr.smp.Sample(ctx, tr.unet, n, nil, tr.sampleOut, nil)
	be.Copy(params, tr.swap)
	if err != nil {
		return fmt.Errorf("train: sampling at step %d: %w", tr.st.Step, err)
	}
	dir := filepath.Join(tr.cfg.Run.Dir, SamplesDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("train: %w", err)
	}
	path := filepath.Join(dir, fmt.Sprintf("step-%08d.png", tr.st.Step))
	err = writeAtomic(path, func(w io.Writer) error { return imgio.WriteGridPNG(w, tr.sampleOut, n, tr.C, tr.S, tr.S) })
	if err != nil {
		return tr.writeFailed(fmt.Errorf("train: samples at step %d: %w", tr.st.Step, err))
	}
	res.Samples = path
	tr.log.Info("samples", zap.Int("step", tr.st.Step), zap.String("path", path), zap.String("sampler", tr.cfg.Sample.Sampler),
		zap.Int("sampler_steps", len(tr.smp.Timesteps())), zap.Duration("took", time.Since(t0).Round(time.Millisecond)))
	return nil
}

// exported says whether the run directory's EMA export is that of the current step.
func (tr *trainer) exported() bool {
	f, err := safetensors.ReadFile(filepath.Join(tr.cfg.Run.Dir, EMAWeights))
	return err == nil && f.Metadata["step"] == fmt.Sprint(tr.st.Step)
}

// exportEMA writes the EMA weights alone under diffusers' names: the file to load into a PyTorch UNet2DModel.
func (tr *trainer) exportEMA() error {
	host := make([]float32, tr.unet.NumParams())
	tr.be.Download(host, tr.ema)
	ts := make([]safetensors.Tensor, len(tr.table))
	for i, p := range tr.table {
		ts[i] = safetensors.Tensor{Name: p.Name, Shape: p.Shape, Data: host[p.Offset : p.Offset+p.Size]}
	}
	path := filepath.Join(tr.cfg.Run.Dir, EMAWeights)
	err := writeAtomic(path, func(w io.Writer) error {
		return safetensors.Write(w, ts, map[string]string{"format": "pt", "step": fmt.Sprint(tr.st.Step), "weights": "ema"})
	})
	if err != nil {
		return fmt.Errorf("train: %w", err)
	}
	return nil
}

// openMetrics opens metrics.jsonl for appending. On a resume, lines past the checkpoint's step (written by the
// interrupted process after its last checkpoint) are dropped first, so the file reads as one uninterrupted run.
func (tr *trainer) openMetrics(resumed bool) error {
	path := filepath.Join(tr.cfg.Run.Dir, MetricsFile)
	if resumed {
		if b, err := os.ReadFile(path); err == nil {
			var keep []byte
			for _, line := range strings.SplitAfter(string(b), "\n") {
				var m Metrics
				if json.Unmarshal([]byte(line), &m) != nil || m.Step > tr.st.Step {
					continue
				}
				keep = append(keep, line...)
				tr.history = append(tr.history, m)
			}
			if err := writeFileAtomic(path, keep); err != nil {
				return fmt.Errorf("train: %w", err)
			}
		}
	}
	flag := os.O_CREATE | os.O_WRONLY | os.O_APPEND
	if !resumed {
		flag |= os.O_TRUNC
	}
	f, err := os.OpenFile(path, flag, 0o644)
	if err != nil {
		return fmt.Errorf("train: metrics: %w", err)
	}
	tr.metricsF = f
	return nil
}

func (tr *trainer) writeMetrics(m Metrics) error {
	tr.history = append(tr.history, m)
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("train: metrics: %w", err)
	}
	// A failed append (a full disk) is cut back off, so that the file never holds a partial line.
	st, serr := tr.metricsF.Stat()
	if _, err := tr.metricsF.Write(append(b, '\n')); err != nil {
		if serr == nil {
			tr.metricsF.Truncate(st.Size())
		}
		return fmt.Errorf("train: metrics %s: %w", tr.metricsF.Name(), err)
	}
	return nil
}

// lastGood names the last checkpoint written or restored, for error messages.
func (tr *trainer) lastGood() string {
	if tr.lastCkpt == "" {
		return "none (no checkpoint was written yet)"
	}
	return tr.lastCkpt
}

// writeFailed applies train.on_write_error to a failed write (a checkpoint, a sample grid, the loss plot, a metrics
// line): "stop" returns err, completed with the last good checkpoint; "continue" logs it, counts it (write_errors
// in metrics.jsonl) and returns nil, so that training goes on and the next write tries again.
func (tr *trainer) writeFailed(err error) error {
	if tr.cfg.Train.OnWriteError == "continue" {
		tr.writeErrors++
		tr.log.Error("write failed; training goes on (train.on_write_error = \"continue\")", zap.Error(err),
			zap.Int("write_errors", tr.writeErrors), zap.String("last_good_checkpoint", tr.lastGood()))
		return nil
	}
	return fmt.Errorf("%w; stopped (train.on_write_error = \"stop\"). The last good checkpoint is %s: free space or fix the disk and continue with -resume",
		err, tr.lastGood())
}

// poison applies Options.Inject to the step about to be checked (tests only).
func (tr *trainer) poison() error {
	name, v := tr.inject(tr.st.Step + 1)
	switch name {
	case "":
		return nil
	case "loss":
		tr.be.Upload(tr.losses[0], []float32{v})
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
// blown-up weight is the cause when there is one), then the accumulated gradients. It downloads both, so it runs
// only after a step has failed the finite check of its loss and gradient norm: the loop itself pays nothing for it.
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

// plotLoss redraws loss.png from the metrics so far.
func (tr *trainer) plotLoss() error {
	steps := make([]int, len(tr.history))
	losses := make([]float64, len(tr.history))
	for i, m := range tr.history {
		steps[i], losses[i] = m.Step, m.Loss
	}
	path := filepath.Join(tr.cfg.Run.Dir, LossPlot)
	if err := writeAtomic(path, func(w io.Writer) error { return plot.Loss(w, steps, losses, 800, 480) }); err != nil {
		return tr.writeFailed(fmt.Errorf("train: loss plot: %w", err))
	}
	return nil
}

func (tr *trainer) close() {
	tr.feed.close()
	if tr.metricsF != nil {
		tr.metricsF.Close()
	}
}

// configField is the resolved config as one structured log field: {"data": {"channels": 1, …}, …}, the TOML
// decoded into maps, so that console lines stay on one line and JSON logs get an object, not a string.
func configField(cfg config.Config) zap.Field {
	var m map[string]any
	if _, err := toml.Decode(cfg.TOML(), &m); err != nil {
		return zap.String("config", cfg.TOML())
	}
	return zap.Any("config", m)
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

func round(x float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(x*p) / p
}
