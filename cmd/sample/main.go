// Command sample draws images from a trainer checkpoint with one of package sampler's samplers (ddpm, ddim, euler,
// euler_maruyama, heun, dpmpp2m).
//
//	bin/sample -ckpt runs/fashion32/checkpoints/latest.safetensors -out grid.png
//	bin/sample -ckpt CKPT -sampler ddim -steps 50 -eta 0 -seed 3 -n 64 -out grid.png -npy samples.npy
//	bin/sample -ckpt CKPT -sampler ddpm -init xT.npy -npy x0.npy
//	bin/sample -ckpt CKPT -sampler dpmpp2m -steps 20 -out grid.png
//	bin/sample -ckpt CKPT -sampler heun -steps 18 -spacing karras -churn 0 -out grid.png
//	bin/sample -ckpt CKPT -device cuda          on an NVIDIA GPU (binaries built with -tags cuda)
//	bin/sample -ckpt CKPT -precision bf16       bf16 matmuls (default: the checkpoint's train.precision)
//	bin/sample -bench 50 -c configs/tiny.toml   time 50 sampling steps (forward + update, -batch images) of a
//	                                            freshly initialised model (or -ckpt's weights); the last line is
//	                                            bench: <img/s> img/s, <GFLOP/s> GFLOP/s, <ms> ms/step, <MiB> MiB peak
//
// The model and the diffusion schedule come from the config stored in the checkpoint; the sampler settings default
// to its [sample] section. -ckpt also takes a diffusers model (a DDPMPipeline folder such as RUN/pipeline, a unet
// folder, or weights next to a config.json): its config.json builds the model, its scheduler config sets the schedule,
// variance and clipping. Same checkpoint, seed and flags: same output bytes.
//
// Exit status: 0 success, 2 usage errors, 1 runtime failures (including a damaged checkpoint).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ddpmgo/ddpm/backend"
	"github.com/ddpmgo/ddpm/bench"
	"github.com/ddpmgo/ddpm/checkpoint"
	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/diffusion"
	"github.com/ddpmgo/ddpm/imgio"
	"github.com/ddpmgo/ddpm/internal/atomicfile"
	"github.com/ddpmgo/ddpm/internal/cli"
	"github.com/ddpmgo/ddpm/model"
	"github.com/ddpmgo/ddpm/ops"
	"github.com/ddpmgo/ddpm/sampler"
)

// SIGINT/SIGTERM cancel run's context: sampling stops between network evaluations and nothing is written (outputs
// are only ever written whole); a second signal kills at once.
func main() { cli.Main(run) }

const usageHead = `Usage: sample -ckpt PATH [flags]

Draws images from a checkpoint written by bin/train (the EMA weights unless -raw) and writes a PNG grid (-out)
and/or the float32 samples in [-1, 1] as a NumPy array [n, C, H, W] (-npy). Sampler defaults come from the
checkpoint's [sample] config. With -init the sampler starts from the given x_T instead of drawing it.
-ckpt also takes a diffusers DDPMPipeline folder (what bin/train leaves in RUN/pipeline, or a model trained
elsewhere), a unet folder, or weights next to a config.json; its scheduler_config.json sets the schedule.

Outputs are written whole or not at all. SIGINT/SIGTERM stop sampling and exit 1 without writing anything.

Flags:
`

const usageTail = `
Exit status: 0 success, 2 usage error, 1 runtime failure (including an interruption).
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := cli.New("sample", usageHead, usageTail, stderr)
	ckpt := fs.String("ckpt", "", "trainer checkpoint `PATH` (e.g. runs/fashion32/checkpoints/latest.safetensors), or a diffusers model: a DDPMPipeline folder (runs/fashion32/pipeline), a unet folder, or weights next to a config.json")
	smp := fs.String("sampler", "", "ddpm | ddim | euler | euler_maruyama | heun | dpmpp2m (default: the checkpoint's sample.sampler)")
	steps := fs.Int("steps", 0, "sampling steps (default: sample.steps; -sampler ddpm without -steps: all T)")
	eta := fs.Float64("eta", 0, "ddim: 0 = deterministic … 1 = DDPM-like noise (default: sample.eta)")
	spacing := fs.String("spacing", "", "auto | leading | trailing | linspace | karras (default: sample.spacing)")
	variance := fs.String("variance", "", "ddpm σ²: beta (fixed_large) | posterior (fixed_small) (default: sample.variance)")
	clippedEps := fs.Bool("clipped-eps", true, "ddim with clipping: recompute ε̂ from the clipped x̂0; false keeps the network's (default: sample.clipped_eps)")
	churn := fs.Float64("churn", 0, "heun: S_churn of the stochastic sampler (default: sample.churn)")
	n := fs.Int("n", 0, "number of images (default: sample.count, or the first dimension of -init)")
	batch := fs.Int("batch", 64, "images per network evaluation (changes the samples in the last bits at most: the CPU libraries pick kernels by batch size)")
	seed := fs.Uint64("seed", 0, "seed of x_T and of the sampler noise")
	out := fs.String("out", "", "PNG grid `FILE` (default samples.png when -npy is not given)")
	npy := fs.String("npy", "", "write the samples as float32 NumPy `FILE` [n, C, H, W] in [-1, 1]")
	initPath := fs.String("init", "", "start from x_T read from this float32 NumPy `FILE` [n, C, H, W]")
	device := fs.Device()
	bench, benchWarmup := fs.Bench("sampling steps at -batch images", 2)
	benchCfg := fs.String("c", "", "-bench without -ckpt: the config `FILE` whose model to time (random weights)")
	raw := fs.Bool("raw", false, "use the trained weights instead of their EMA")
	precision := fs.String("precision", "", "fp32 | tf32 (GPU) | bf16 (CPUs with AVX512-BF16 or AMX) | auto (bf16 where native, else fp32): the network's matmul precision (default: the checkpoint's train.precision; fp32 for a diffusers folder)")
	noClip := fs.Bool("no-clip", false, "do not clip x̂0 to [-1, 1] in each step (default: sample.clip)")
	if status, ok := fs.Parse(args); !ok {
		return status
	}
	usage, fail := fs.Usagef, fs.Fail
	if *batch < 1 {
		return usage("-batch %d: must be ≥ 1", *batch)
	}
	if status := fs.CheckBench(*bench, *benchWarmup); status != cli.OK {
		return status
	}
	if *bench > 0 {
		return runBench(ctx, fs, *ckpt, *benchCfg, *device, *precision, *batch, *bench, *benchWarmup, *raw, stdout)
	}
	if *ckpt == "" {
		return usage("-ckpt PATH is required (see -h)")
	}
	set := fs.Set()
	src, err := openSource(*ckpt, *raw)
	if errors.Is(err, errRawFolder) {
		return usage("%v", err)
	} else if err != nil {
		return fail(err)
	}
	cfg := src.cfg
	if src.note != "" {
		fmt.Fprintf(stderr, "sample: %s\n", src.note)
	}
	be, closeBe, err := backend.Open(*device, cfg.Device, nil)
	if err != nil {
		return usage("%v", err)
	}
	defer closeBe()
	if err := setPrecision(be, cfg, *precision); err != nil {
		return usage("%v", err)
	}

	sc := cfg.Sample
	if set["spacing"] {
		sc.Spacing = *spacing
	}
	if set["variance"] {
		sc.Variance = *variance
	}
	if set["clipped-eps"] {
		sc.ClippedEps = *clippedEps
	}
	if set["churn"] {
		sc.Churn = *churn
	}
	opt := sampler.OptionsFromConfig(sc, *seed)
	opt.Clip = opt.Clip && !*noClip
	if set["sampler"] {
		opt.Sampler = *smp
		if opt.Sampler == "ddpm" && !set["steps"] {
			opt.Steps = cfg.Diffusion.Timesteps
		}
	}
	if set["steps"] {
		opt.Steps = *steps
	}
	if set["eta"] {
		opt.Eta = *eta
	}
	C, S := cfg.Data.Channels, cfg.Data.ImageSize
	D := C * S * S
	count := sc.Count
	var xT []float32
	if *initPath != "" {
		x, shape, err := imgio.ReadNPY(*initPath)
		if err != nil {
			return fail(err)
		}
		if len(shape) != 4 || shape[1] != C || shape[2] != S || shape[3] != S {
			return usage("-init %s: shape %v; this model wants [n, %d, %d, %d]", *initPath, shape, C, S, S)
		}
		if set["n"] && *n != shape[0] {
			return usage("-n %d but -init holds %d images", *n, shape[0])
		}
		xT, count = x, shape[0]
	} else if set["n"] {
		count = *n
	}
	if count < 1 {
		return usage("-n %d: must be ≥ 1", count)
	}
	pngPath := *out
	if pngPath == "" && *npy == "" {
		pngPath = "samples.png"
	}

	mb := min(*batch, count)
	unet, err := model.New(be, cfg.Model, C, S, mb)
	if err != nil {
		return fail(err)
	}
	w, err := src.weights(unet.Table())
	if err != nil {
		return fail(err)
	}
	be.Upload(unet.Params(), w)
	unet.SetTrain(false, 0, 0)
	sch, err := diffusion.New(cfg.Diffusion.Schedule, cfg.Diffusion.Timesteps, cfg.Diffusion.BetaStart, cfg.Diffusion.BetaEnd)
	if err != nil {
		return fail(err)
	}
	sp, err := sampler.New(be, sch, opt, mb, D)
	if err != nil {
		return usage("%v", err)
	}

	bar := fs.Bar("evals")
	samples := make([]float32, count*D)
	t0 := time.Now()
	err = sp.Sample(ctx, unet, count, xT, samples, func(done, total int) {
		if done == 1 {
			bar.SetTotal(total)
		}
		bar.Update(done, "")
	})
	bar.Finish()
	if err != nil {
		if ctx.Err() != nil {
			return fail(fmt.Errorf("interrupted by a signal while sampling; nothing written (%v)", err))
		}
		return fail(err)
	}
	// Each output is written to a temporary file, fsynced and renamed into place (package atomicfile): a full disk
	// or an I/O error leaves no partial file under the name and an existing file as it was.
	if pngPath != "" {
		if err := atomicfile.Write(pngPath, func(w io.Writer) error { return imgio.WriteGridPNG(w, samples, count, C, S, S) }); err != nil {
			return fail(err)
		}
	}
	if *npy != "" {
		if err := atomicfile.Write(*npy, func(w io.Writer) error { return imgio.WriteNPY(w, samples, []int{count, C, S, S}) }); err != nil {
			return fail(err)
		}
	}
	weights := "ema"
	if *raw {
		weights = "raw"
	}
	etaNote := ""
	if opt.Sampler == sampler.DDIM {
		etaNote = fmt.Sprintf("eta %g, ", opt.Eta)
	}
	fmt.Fprintf(stderr, "sample: %d images %dx%dx%d, %s %d steps, %d evaluations (%sseed %d, %s weights of step %s) in %s → %s %s\n",
		count, C, S, S, opt.Sampler, len(sp.Timesteps()), sp.Evals(), etaNote, *seed, weights, src.step,
		time.Since(t0).Round(time.Millisecond), pngPath, *npy)
	return cli.OK
}

// weightsPrefix is the checkpoint prefix of the weights to sample from: the EMA unless raw.
func weightsPrefix(raw bool) string {
	if raw {
		return ""
	}
	return checkpoint.PrefixEMA
}

// runBench times sampling steps: the model of -ckpt (its EMA weights, or the raw ones with -raw) or of -c FILE
// (seeded initial weights).
// setPrecision applies -precision (when given, it replaces the checkpoint's train.precision and
// device.tensor_cores) or else the checkpoint's own.
func setPrecision(be ops.Backend, cfg config.Config, precision string) error {
	if precision != "" {
		if _, err := ops.ParsePrecision(precision); err != nil && precision != config.PrecisionAuto {
			return fmt.Errorf("-precision: %w (or auto)", err)
		}
		cfg.Train.Precision, cfg.Device.TensorCores = precision, false
	}
	return backend.SetPrecision(be, cfg, nil)
}

func runBench(ctx context.Context, fs *cli.Command, ckpt, cfgPath, device, precision string, batch, steps, warmup int, raw bool, stdout io.Writer) int {
	var cfg config.Config
	var weights []float32
	switch {
	case ckpt != "":
		src, err := openSource(ckpt, raw)
		if errors.Is(err, errRawFolder) {
			return fs.Usagef("%v", err)
		} else if err != nil {
			return fs.Fail(err)
		}
		cfg = src.cfg
		table, err := model.Table(cfg.Model, cfg.Data.Channels, cfg.Data.ImageSize)
		if err != nil {
			return fs.Fail(err)
		}
		if weights, err = src.weights(table); err != nil {
			return fs.Fail(err)
		}
	case cfgPath != "":
		var err error
		if cfg, err = config.Load(cfgPath, nil); err != nil {
			return fs.Usagef("%v", err)
		}
	default:
		return fs.Usagef("-bench needs -ckpt PATH or -c FILE (see -h)")
	}
	be, closeBe, err := backend.Open(device, cfg.Device, nil)
	if err != nil {
		return fs.Usagef("%v", err)
	}
	defer closeBe()
	if err := setPrecision(be, cfg, precision); err != nil {
		return fs.Usagef("%v", err)
	}
	r, err := bench.Sample(ctx, cfg, be, weights, batch, steps, warmup)
	if err != nil {
		return fs.Fail(err)
	}
	fmt.Fprintf(stdout, "bench: %s sampling, %s, batch %d, %d steps after %d warm-up, %.2f s; peak RSS %.0f MiB, device %.0f MiB\n",
		r.Device, r.Setup(), batch, r.Steps, r.Warmup, r.Seconds, r.PeakRSSMiB, r.DeviceMiB)
	fmt.Fprintln(stdout, r.Line())
	return cli.OK
}
