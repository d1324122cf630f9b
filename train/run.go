// Package train is the training loop of DDPM (Ho et al. 2020, Algorithm 1) written against ops.Backend: ε-prediction
// with the simple MSE loss, AdamW with decoupled weight decay and bias correction, clipping by global gradient norm,
// linear learning-rate warm-up, gradient accumulation, an EMA of the weights, budgets in steps, epochs and minutes,
// and a run directory holding the resolved config, metrics, a loss plot, sample grids and atomic, resumable
// checkpoints (package checkpoint). It names no backend: the same code runs on the CPU and on a GPU.
//
// # One step
//
// Step s (0-based: s steps are done before it) runs A = train.grad_accum micro-batches of B = train.batch_size
// images of D = C·H·W elements. Micro-batch k has the global counter g = s·A + k, and every random number it uses is
// a pure function of (train.seed, stream, counter):
//
//	x0      Feed.Gather: the Loader's next batch (epoch order and flips, see package data)
//	t_i     Timesteps: rng.Intn(seed, rng.StreamTimestep, g·B + i, T)   uniform in {0, …, T−1}, i < B
//	ε       Normal(seed, rng.StreamNoise, offset g·B·D)                  B·D standard normals
//	x_t     QSample: √ᾱ_t·x0 + √(1−ᾱ_t)·ε
//	ε̂       U-Net(x_t, t), dropout masks at rng position g (model.SetTrain(true, seed, g))
//	loss_k  MSE(ε̂, ε);  gradients accumulate over the A micro-batches
//
// then ops.StepControl.Update ends the step: with G the accumulated gradient (the sum of the A micro-batch mean
// gradients) and ‖g‖ = ‖G‖/A the norm of their average, clip = min(1, grad_clip/(‖g‖ + 1e-6)), AdamW with
// GradScale = clip/A and the schedule's learning rate and bias corrections (schedule.go), the EMA update, and zeroed
// gradients; a step whose loss or ‖G‖ is NaN/Inf updates nothing. So the RNG position of a run is just its step
// counter, and a resumed run draws exactly what an uninterrupted one would.
//
// # Host reads
//
// Inside a step nothing crosses between host and device but kernel arguments (on a backend with ops.Feeder and
// ops.StepController; the CPU runs the same path through their host implementations). The host reads the window
// statistics (ops.Window: loss and norm sums, skipped steps) only at log steps (train.log_every), checkpoints, the
// end, and when a progress bar on a terminal is due. A NaN/Inf is therefore noticed up to log_every steps late, but
// no update happens after it when the run is to stop (the controller's sticky skip), and a checkpoint always follows
// a read, so no checkpoint ever holds a step after it. The loop allocates nothing.
//
// # Several ranks
//
// With a Collective of N ranks (Options.Collective; package mpi under mpirun) each rank runs the steps above on its
// shard of every global batch (samples r·B/N … (r+1)·B/N − 1, with their global indices for t, ε, the flips and the
// dropout masks), the gradients are summed over the ranks from the last backward pass on (collective.go), and the
// step controller sees the global batch's loss and gradient on every rank. Decisions that a rank could take alone
// are agreed: when to stop, whether rank 0's writes failed; the ranks compare a hash of their weights at every log
// step and checkpoint. Rank 0 writes; a checkpoint does not depend on N (docs/distributed.md).
package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/BurntSushi/toml"
	"go.uber.org/zap"

	"github.com/ddpmgo/ddpm/checkpoint"
	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/data"
	"github.com/ddpmgo/ddpm/diffusers"
	"github.com/ddpmgo/ddpm/diffusion"
	"github.com/ddpmgo/ddpm/internal/atomicfile"
	"github.com/ddpmgo/ddpm/model"
	"github.com/ddpmgo/ddpm/ops"
	"github.com/ddpmgo/ddpm/progress"
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

	// InitFrom fine-tunes a model someone else trained: a diffusers pipeline folder, unet folder or weights file
	// next to a config.json (see package diffusers). Its model config replaces [model], data.channels and
	// data.image_size, its scheduler config (when present) [diffusion], sample.variance and sample.clip (InitConfig);
	// the run starts from its weights (the EMA too) with a fresh optimizer and step count. With Resume or ResumeFrom
	// the checkpoint's state is restored instead, so that a fine-tuning run continues like any other.
	InitFrom string
	// Overrides are the -set values cfg was made with: InitFrom refuses those its folder contradicts.
	Overrides []string
	// Collective is the group of ranks that trains this run data-parallel (nil: Single, one process). Every rank
	// calls Run with the same config; train.batch_size stays the global batch, split evenly among the ranks. Rank
	// 0 writes the run directory (config, metrics, plots, samples, checkpoints, EMA export); the others write
	// nothing and read only the checkpoint they resume from (so run.dir must be on a file system they share).
	Collective Collective
	// DeviceTrace, on a backend with device memory (a GPU), measures the training step's device bytes for the
	// memory check before training (Memory.Trace; memtrace.DeviceStep); nil: model.Summary's formula, which
	// leaves the backend's own scratch and packed weights out.
	DeviceTrace DeviceTracer
	// BucketElems is the size, in float32 elements, of the gradient ranges reduced during the last micro-batch's
	// backward pass on several ranks (0: 1<<20, 4 MiB). Smaller buckets start the all-reduce earlier and overlap
	// more of the backward pass; each costs a collective's latency.
	BucketElems int
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
	PipelineDir = "pipeline"             // the EMA model as a diffusers DDPMPipeline folder, written at the end
)

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
	sch   *ops.Schedule
	smp   *sampler.Sampler

	B, A, C, S, D, T int
	seed             uint64

	// Data parallelism (collective.go): this rank's shard of each global batch is samples first … first+b−1.
	col         Collective
	rank, ranks int
	b, first    int
	reducing    bool      // the last micro-batch's backward pass is queuing gradient buckets (gradsReady)
	bucket      int       // elements per gradient bucket (Options.BucketElems, default bucketElems)
	sent        int       // the gradients from sent on are queued
	hashBuf     []float32 // checkSame's host copy
	hashes      []int64

	// Backend buffers and helpers, allocated once.
	x0, eps, xt, dout, tBuf ops.Buf
	m, v, ema, swap         ops.Buf
	ctl                     ops.StepControl // step.go
	feed                    *feed           // feed.go
	next                    []ops.StepSettings
	sampleOut               []float32

	st      checkpoint.State // Step, AdamStep, Skipped (the rest is filled when saving)
	pending int              // steps since the last read of the step controller
	out     outputs          // outputs.go
	metrics *metricsLog      // metrics.go

	inject func(step int) (string, float32) // tests only: see poison
}

// Run trains cfg on opt.Backend until a budget is spent or ctx is cancelled, writing everything into cfg.Run.Dir.
// Cancellation (SIGINT/SIGTERM in bin/train) finishes the current step, writes a checkpoint and returns a Result
// with Interrupted set and a nil error. A NaN or Inf loss returns an error wrapping ErrNonFinite that names the step
// and the last good checkpoint (unless train.skip_nonfinite).
func Run(ctx context.Context, cfg config.Config, opt Options) (Result, error) {
	return runWith(ctx, cfg, opt, nil)
}

// runWith is Run with a test hook (see poison).
func runWith(ctx context.Context, cfg config.Config, opt Options, inject func(int) (string, float32)) (res Result, err error) {
	var tr *trainer
	// A device that runs out of memory panics with *ops.DeviceError (at set-up, or mid-run when a launcher's scratch
	// grows): an error like any other device error, with the checkpoint to continue from.
	defer func() {
		if r := recover(); r != nil {
			de, ok := r.(*ops.DeviceError)
			if !ok {
				panic(r)
			}
			last := "none (no checkpoint was written yet)"
			if tr != nil {
				last = tr.out.lastGood()
			}
			res.Loss = math.NaN()
			err = fmt.Errorf("train: on %s: %w; the last good checkpoint is %s (continue with -resume, on this or another -device)",
				opt.Backend.Name(), de, last)
		}
	}()
	if opt.Backend == nil {
		return Result{Loss: math.NaN()}, errors.New("train: no backend")
	}
	log := opt.Log
	if log == nil {
		log = zap.NewNop()
	}
	var init *diffusers.Folder
	if opt.InitFrom != "" {
		c, f, err := InitConfig(cfg, opt.InitFrom, opt.Overrides)
		if err != nil {
			return Result{Loss: math.NaN()}, err
		}
		cfg, init = c, f
		log.Info("model from -init-from", zap.String("config", f.ConfigPath), zap.String("weights", f.WeightsPath),
			zap.String("scheduler", f.SchedulerPath))
	}
	log.Info("resolved config", zap.String("run", cfg.Run.Name), zap.String("dir", cfg.Run.Dir),
		zap.String("backend", opt.Backend.Name()), configField(cfg))
	if tr, err = setup(cfg, opt, log, init); err != nil {
		return Result{Loss: math.NaN()}, err
	}
	defer tr.close()
	tr.inject = inject
	return tr.loop(ctx)
}

// setup loads the data, builds the model and its buffers, and initialises (from init's weights when given) or
// restores the state.
func setup(cfg config.Config, opt Options, log *zap.Logger, init *diffusers.Folder) (*trainer, error) {
	tc := cfg.Train
	tr := &trainer{cfg: cfg, be: opt.Backend, log: log, bar: opt.Bar,
		B: tc.BatchSize, A: tc.GradAccum, C: cfg.Data.Channels, S: cfg.Data.ImageSize, T: cfg.Diffusion.Timesteps, seed: tc.Seed}
	tr.D = tr.C * tr.S * tr.S
	tr.out = outputs{dir: cfg.Run.Dir, lastSave: -1}
	tr.col = opt.Collective
	tr.bucket = opt.BucketElems
	if tr.bucket <= 0 {
		tr.bucket = bucketElems
	}
	if tr.col == nil {
		tr.col = Single{}
	}
	tr.rank, tr.ranks = tr.col.Rank(), tr.col.Size()
	var err error
	if tr.first, tr.b, err = shardOf(tr.B, tr.rank, tr.ranks); err != nil {
		return nil, err
	}
	dir, ckdir := cfg.Run.Dir, checkpoint.Dir(cfg.Run.Dir)
	resumeFrom, err := resumePath(opt, dir)
	if err != nil {
		return nil, err
	}

	ds := opt.Dataset
	if ds == nil {
		if ds, err = openDataset(cfg.Data, log); err != nil {
			return nil, err
		}
	}
	if c, h, w := ds.Shape(); c != tr.C || h != tr.S || w != tr.S {
		return nil, fmt.Errorf("train: data set images are %dx%dx%d, the config wants %dx%dx%d (data.channels × data.image_size²)", c, h, w, tr.C, tr.S, tr.S)
	}
	tr.nData = ds.Len()
	local := cfg
	local.Train.BatchSize = tr.b // what this rank holds
	mem, err := EstimateMemory(local, tr.be, tr.nData)
	if err != nil {
		return nil, err
	}
	if mem.Device && opt.DeviceTrace != nil {
		if err := mem.Trace(local, opt.DeviceTrace); err != nil {
			log.Warn("memory check: the device step was not traced; model.Summary's formula instead", zap.Error(err))
		} else {
			s := mem.Traced
			log.Info("device step memory (traced)", zap.String("precision", s.Precision), zap.Int64("peak_bytes", s.Peak),
				zap.Int64("buffers_bytes", s.Buffers()), zap.Int64("scratch_bytes", s.Scratch),
				zap.Int64("packed_weights_bytes", s.Packed), zap.Int64("formula_bytes", mem.Formula))
		}
	}
	if err := mem.Check(); err != nil {
		return nil, err
	}
	if tr.ld, err = data.NewLoader(ds, tr.B, tr.seed, cfg.Data.Flip); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	host, err := diffusion.New(cfg.Diffusion.Schedule, tr.T, cfg.Diffusion.BetaStart, cfg.Diffusion.BetaEnd)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	if tr.sch, err = sampler.UploadSchedule(tr.be, host, cfg.Sample.Variance); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	if tr.unet, err = model.New(tr.be, cfg.Model, tr.C, tr.S, tr.b); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	tr.table = tr.unet.Table()
	if tr.smp, err = sampler.New(tr.be, host, samplerOptions(cfg), min(cfg.Sample.Count, tr.b), tr.D); err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}

	be, P := tr.be, tr.unet.NumParams()
	if tr.ranks > 1 {
		tr.unet.SetShard(tr.B, tr.first)
		tr.unet.OnGradsReady(tr.gradsReady)
		tr.hashBuf, tr.hashes = make([]float32, P), make([]int64, tr.ranks)
	}
	tr.x0, tr.eps, tr.xt, tr.dout = be.Alloc(tr.b*tr.D), be.Alloc(tr.b*tr.D), be.Alloc(tr.b*tr.D), be.Alloc(tr.b*tr.D)
	tr.tBuf = be.Alloc(tr.b)
	tr.m, tr.v, tr.ema, tr.swap = be.Alloc(P), be.Alloc(P), be.Alloc(P), be.Alloc(P)
	tr.sampleOut = make([]float32, cfg.Sample.Count*tr.D)
	tr.ctl = ops.NewStepControl(be, ops.StepConfig{A: tr.A, MaxNorm: tc.GradClip, Sticky: !tc.SkipNonfinite,
		Beta1: float32(tc.AdamBeta1), Beta2: float32(tc.AdamBeta2), Eps: float32(tc.AdamEps), Window: windowSize(tc)})
	tr.next = make([]ops.StepSettings, windowSize(tc))
	if tr.feed, err = newFeed(be, ds, cfg.Data.Flip, tr.seed, log); err != nil {
		return nil, err
	}

	if err := tr.onRank0(func() error {
		if err := os.MkdirAll(ckdir, 0o755); err != nil {
			return fmt.Errorf("train: run directory: %w", err)
		}
		for _, d := range []string{dir, ckdir, filepath.Join(dir, SamplesDir)} {
			removed, errs := atomicfile.RemoveStale(d)
			for _, p := range removed {
				log.Info("removed a temporary file left by an interrupted write", zap.String("path", p))
			}
			for _, err := range errs {
				log.Warn("could not remove a stale temporary file", zap.Error(err))
			}
		}
		return nil
	}); err != nil {
		tr.close()
		return nil, err
	}
	switch {
	case resumeFrom != "":
		if err := tr.restore(resumeFrom); err != nil {
			tr.close()
			return nil, err
		}
	case init != nil: // fine-tuning: pretrained weights, a fresh optimizer (m = v = 0) and step count
		w, _, err := init.Weights(tr.table)
		if err != nil {
			return nil, fmt.Errorf("train: -init-from: %w", err)
		}
		be.Upload(tr.unet.Params(), w)
		be.Copy(tr.ema, tr.unet.Params())
		log.Info("initialised from pretrained weights", zap.String("weights", init.WeightsPath), zap.Int("params", P))
	default:
		tr.unet.Init(tr.seed)
		be.Copy(tr.ema, tr.unet.Params()) // the average starts at the initial weights, as diffusers' EMAModel
	}
	if err := tr.checkSame("at the start"); err != nil {
		tr.close()
		return nil, err
	}
	if _, err := tr.read(); err != nil { // hands the controller the settings of the first window
		tr.close()
		return nil, err
	}
	if err := tr.onRank0(func() error {
		if err := atomicfile.WriteBytes(filepath.Join(dir, ConfigFile), []byte(cfg.TOML())); err != nil {
			return fmt.Errorf("train: %w", err)
		}
		tr.metrics, err = openMetrics(filepath.Join(dir, MetricsFile), resumeFrom != "", tr.st.Step)
		return err
	}); err != nil {
		tr.close()
		return nil, err
	}
	_, params, bytes := model.Summary(cfg.Model, tr.C, tr.S, tr.b)
	log.Info("model", zap.Int("params", params), zap.Int64("train_step_bytes", bytes),
		zap.Int("images", tr.nData), zap.Int("steps_per_epoch", tr.ld.StepsPerEpoch()/tr.A))
	if tr.ranks > 1 {
		log.Info("shard", zap.Int("ranks", tr.ranks), zap.Int("global_batch", tr.B), zap.Int("batch_per_rank", tr.b),
			zap.Int("first_sample", tr.first))
	}
	return tr, nil
}

// samplerOptions are the sampler settings of cfg, seeded by train.seed.
func samplerOptions(cfg config.Config) sampler.Options {
	return sampler.OptionsFromConfig(cfg.Sample, cfg.Train.Seed)
}

// close releases what setup allocated on the backend (a GPU context keeps nothing after a run) and the metrics file.
func (tr *trainer) close() {
	tr.feed.free()
	tr.ctl.Free()
	for _, b := range []ops.Buf{tr.x0, tr.eps, tr.xt, tr.dout, tr.tBuf, tr.m, tr.v, tr.ema, tr.swap} {
		tr.be.Free(b)
	}
	tr.smp.Free()
	sampler.FreeSchedule(tr.be, tr.sch)
	tr.unet.Free()
	tr.metrics.close()
	tr.unet.OnGradsReady(nil)
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
