// Command train trains a DDPM (Ho et al. 2020) on images, on the CPU or an NVIDIA GPU.
//
//	bin/train                                   the embedded configs/fashion32.toml (Fashion-MNIST, ~10 min on a CPU)
//	bin/train -c configs/celeba32.toml          a config file
//	bin/train -c FILE -set train.lr=1e-4 -set train.max_steps=500
//	bin/train -c FILE -print-config             the resolved config, then exit
//	bin/train -c FILE -dry-run                  the model summary and memory estimate, then exit (with -device cuda or
//	                                            emu: the GPU step's device memory, traced without a device)
//	bin/train -c FILE -resume                   continue the run in run.dir from its latest checkpoint
//	bin/train -c FILE -resume-from PATH         continue from a given checkpoint
//	bin/train -c FILE -init-from DIR            fine-tune a diffusers model (a DDPMPipeline folder, e.g. RUN/pipeline)
//	bin/train -c FILE -device cuda              on an NVIDIA GPU (a build with -tags cuda: make build-cuda)
//	bin/train -c FILE -device emu               the CUDA kernels on the CPU emulator (slow; for checks)
//	bin/train -c FILE -set train.precision=bf16 bf16 matmuls, FP32 weights and sums (CPUs with AVX512-BF16 or AMX)
//	bin/train -c FILE -bench 20 [-device cuda]  time 20 training steps on random data (the first bench: line names the
//	                                            precision and the convolution kernels); the last line is
//	                                            bench: <img/s> img/s, <GFLOP/s> GFLOP/s, <ms> ms/step, <MiB> MiB peak
//	mpirun -np 4 bin/train -c FILE              data-parallel on 4 processes (a build with -tags mpi: make build-mpi);
//	                                            train.batch_size stays the global batch; rank 0 writes run.dir
//
// Exit status: 0 success (also after SIGINT/SIGTERM, which finish the step and checkpoint), 2 usage or config
// errors, 1 runtime failures.
package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/ddpmgo/ddpm/backend"
	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/configs"
	"github.com/ddpmgo/ddpm/internal/cli"
	"github.com/ddpmgo/ddpm/internal/memtrace"
	"github.com/ddpmgo/ddpm/logging"
	"github.com/ddpmgo/ddpm/model"
	"github.com/ddpmgo/ddpm/train"
)

// multi collects a repeatable flag.
type multi []string

func (m *multi) String() string     { return strings.Join(*m, " ") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func main() { cli.Main(run) }

const usageHead = `Usage: train [flags]

Trains a denoising diffusion model (DDPM, epsilon-prediction, a diffusers-compatible U-Net) and writes into
run.dir (default runs/<config name>): config.toml, metrics.jsonl, loss.png, samples/step-N.png (from the EMA
weights), checkpoints/step-N.safetensors with checkpoints/latest.safetensors, and at the end pipeline/ (a diffusers
DDPMPipeline folder of the EMA weights: DDPMPipeline.from_pretrained("RUN/pipeline")) and unet_ema.safetensors.

Without -c the embedded configs/fashion32.toml is used (Fashion-MNIST from /usr/share/datasets/fashion-mnist,
about ten minutes on a CPU). configs/reference.toml lists every key with its default and meaning.

Interrupting (Ctrl-C, SIGTERM) finishes the current step, writes a checkpoint and exits 0; -resume continues.

Flags:
`

const usageTail = `
Exit status: 0 success, 2 usage or config error, 1 runtime failure.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cmd := cli.New("train", usageHead, usageTail, stderr)
	var sets multi
	cfgPath := cmd.String("c", "", "config `FILE` (TOML); default: the embedded "+configs.Default)
	cmd.Var(&sets, "set", "override one key, `section.key=value` (TOML value; a bare word is a string); repeatable")
	printCfg := cmd.Bool("print-config", false, "print the resolved config (file + -set) and exit")
	dryRun := cmd.Bool("dry-run", false, "print the model summary (blocks, parameters, output shapes, training-step memory) and exit")
	device := cmd.Device()
	bench, benchWarmup := cmd.Bench("training steps on random data (writes no run directory)", 3)
	logFormat := cmd.String("log-format", "console", "log format: console (readable lines) | json (one JSON object per line)")
	debug := cmd.Bool("debug", false, "also log debug lines")
	resume := cmd.Bool("resume", false, "continue the run in run.dir from checkpoints/latest.safetensors")
	resumeFrom := cmd.String("resume-from", "", "continue from the checkpoint at `PATH` (writing into run.dir)")
	initFrom := cmd.String("init-from", "", "fine-tune from a diffusers model `DIR` (a DDPMPipeline folder such as RUN/pipeline, a unet folder, "+
		"or weights next to a config.json): its weights, a fresh optimizer and step count; its config.json replaces [model], "+
		"data.channels and data.image_size, its scheduler config [diffusion], sample.variance and sample.clip (a -set that "+
		"contradicts them is an error)")
	collective := cmd.String("collective", "auto", "under mpirun (a build with -tags mpi): how gradients are summed: "+
		"auto (nccl with -device cuda, else mpi) | mpi (through the host) | nccl (device buffers, libnccl.so.2 loaded at run time)")
	distTimeout := cmd.Duration("dist-timeout", 10*time.Minute, "under mpirun: the watchdog's limit on one collective; "+
		"past it the ranks stop, naming the ranks that hold it up")
	bucketMiB := cmd.Float64("bucket-mib", 4, "under mpirun: the size of the gradient buckets all-reduced while the backward "+
		"pass goes on (smaller: the reduction starts earlier and overlaps more of it; each bucket costs a collective's latency)")
	if status, ok := cmd.Parse(args); !ok {
		return status
	}
	if !(*bucketMiB > 0) {
		return cmd.Usagef("-bucket-mib %v: want a size above 0", *bucketMiB)
	}

	var cfg config.Config
	var err error
	if *cfgPath == "" {
		src, rerr := configs.Files.ReadFile(configs.Default)
		if rerr != nil {
			return cmd.Fail(fmt.Errorf("embedded config: %w", rerr))
		}
		cfg, err = config.Parse(configs.Default, src, sets)
	} else {
		cfg, err = config.Load(*cfgPath, sets)
	}
	if err != nil {
		return cmd.Usagef("%v", err)
	}
	if *initFrom != "" {
		if cfg, _, err = train.InitConfig(cfg, *initFrom, sets); err != nil {
			return cmd.Usagef("%v", err)
		}
	}
	if *printCfg {
		fmt.Fprint(stdout, cfg.TOML())
		return cli.OK
	}
	if *dryRun {
		if d := *device; d != "cpu" && d != "cuda" && d != "emu" { // -dry-run opens no backend, which would say so
			return cmd.Usagef("-device %q: %s", d, backend.Usage)
		}
		table, params, _ := model.Summary(cfg.Model, cfg.Data.Channels, cfg.Data.ImageSize, cfg.Train.BatchSize)
		fmt.Fprint(stdout, table)
		if params == 0 { // the table holds the error
			return cli.Usage
		}
		if *device == "cpu" {
			// the check Run makes before training
			fmt.Fprint(stdout, train.DryRunMemory(cfg, backend.HostKeptLen(cfg.Train.Precision)))
		} else {
			// A GPU backend: its step traced over a driver that holds no memory (no device is opened).
			fmt.Fprint(stdout, train.DryRunDeviceMemory(cfg, *device, memtrace.DeviceStep))
		}
		return cli.OK
	}
	if *logFormat != "console" && *logFormat != "json" {
		return cmd.Usagef("-log-format %q: allowed: console, json", *logFormat)
	}
	if status := cmd.CheckBench(*bench, *benchWarmup); status != cli.OK {
		return status
	}

	g, err := openGroup(*distTimeout)
	if err != nil {
		return cmd.Fail(err)
	}
	bar := cmd.Bar("steps")
	log, err := logging.New(*logFormat, bar, *debug)
	if err != nil {
		return cmd.Usagef("%v", err)
	}
	defer log.Sync()
	runBar := bar
	if g.size > 1 {
		// Every rank logs its warnings and errors, tagged with its rank; rank 0 alone logs the rest and draws the bar.
		log = log.With(zap.Int("rank", g.rank))
		if g.rank != 0 {
			log, runBar = log.WithOptions(zap.IncreaseLevel(zapcore.WarnLevel)), nil
		}
	}
	// fail ends a run that failed on this rank: with several ranks, all of them at once (MPI_Abort), so that none
	// waits for this one.
	fail := func(status int) int {
		if g.size > 1 {
			log.Sync()
			g.abort(status)
		}
		return status
	}
	be, closeBe, err := backend.OpenLocal(*device, cfg.Device, log, g.local)
	if err != nil {
		fmt.Fprintf(stderr, "train: %v\n", err)
		return fail(cli.Usage)
	}
	if err := backend.SetPrecision(be, cfg, log); err != nil { // before anything runs: bf16 without the CPU for it stops here
		fmt.Fprintf(stderr, "train: %v\n", err)
		closeBe()
		return fail(cli.Usage)
	}
	if err := g.bind(*device, be, *collective, log); err != nil {
		log.Error("collective", zap.Error(err))
		closeBe()
		return fail(cli.Runtime)
	}
	if g.size > 1 {
		log.Info("data parallel", zap.Int("ranks", g.size), zap.Int("local_rank", g.local), zap.String("collective", g.name),
			zap.String("device", be.Name()))
	}
	// end releases the collective (NCCL before the GPU context it lives in, then MPI) and the backend after a clean
	// end on every rank.
	end := func(status int) int {
		err := g.close()
		closeBe()
		if err != nil {
			log.Error("closing the collective", zap.Error(err))
			return cli.Runtime
		}
		return status
	}

	if *bench > 0 {
		r, err := train.BenchTrain(ctx, cfg, be, g.col, *bench, *benchWarmup, log)
		if err != nil {
			log.Error("benchmark failed", zap.Error(err))
			return fail(cli.Runtime)
		}
		if g.rank == 0 {
			fmt.Fprintf(stdout, "bench: %s, %s, %s, batch %d, %d steps after %d warm-up, %.2f s; peak RSS %.0f MiB, device %.0f MiB\n",
				cfg.Run.Name, r.Device, r.Setup(), r.Images, r.Steps, r.Warmup, r.Seconds, r.PeakRSSMiB, r.DeviceMiB)
			fmt.Fprintln(stdout, r.Line())
		}
		return end(cli.OK)
	}

	opts := train.Options{Backend: be, Log: log, Resume: *resume, ResumeFrom: *resumeFrom, Bar: runBar,
		InitFrom: *initFrom, Overrides: sets, Collective: g.col, BucketElems: max(1, int(*bucketMiB*(1<<20)/4))}
	if *device != "cpu" {
		opts.DeviceTrace = memtrace.DeviceStep // the memory check measures the GPU backend's step
	}
	res, err := train.Run(ctx, cfg, opts)
	if err != nil {
		bar.Finish()
		log.Error("training failed", zap.Error(err))
		return fail(cli.Runtime)
	}
	if res.Interrupted {
		log.Info("stopped by signal; continue with -resume", zap.String("checkpoint", res.Checkpoint))
	}
	return end(cli.OK)
}
