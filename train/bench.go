package train

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/data"
	"github.com/ddpmgo/ddpm/diffusion"
	"github.com/ddpmgo/ddpm/model"
	"github.com/ddpmgo/ddpm/ops"
	"github.com/ddpmgo/ddpm/rng"
	"github.com/ddpmgo/ddpm/sampler"
)

// BenchResult is what a benchmark measured.
type BenchResult struct {
	Steps, Warmup int
	Images        int     // images per timed step (batch × grad_accum for training)
	ImagesPerSec  float64 // Images·Steps / Seconds
	GFLOPs        float64 // model FLOPs per second / 1e9: 3 × ForwardFLOPs per training image, 1 × per sampling image
	MsPerStep     float64
	Seconds       float64
	PeakRSSMiB    float64 // the process's peak resident set (getrusage ru_maxrss)
	DeviceMiB     float64 // device memory in use after the run (cuda; 0 where the device is host memory)
	Device        string
}

// PeakMiB is the memory the benchmark line reports: the peak RSS plus, on a GPU, the device memory in use. (The
// emulator's "device" memory is on the C heap, already inside the RSS.)
func (r BenchResult) PeakMiB() float64 { return r.PeakRSSMiB + r.DeviceMiB }

// Line is the benchmark's summary line: "bench: <img/s> img/s, <GFLOP/s> GFLOP/s, <ms> ms/step, <MiB> MiB peak".
func (r BenchResult) Line() string {
	return fmt.Sprintf("bench: %.1f img/s, %.2f GFLOP/s, %.2f ms/step, %.0f MiB peak", r.ImagesPerSec, r.GFLOPs,
		r.MsPerStep, r.PeakMiB())
}

// benchMemory fills the memory fields.
func benchMemory(r *BenchResult, be ops.Backend) {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		r.PeakRSSMiB = float64(ru.Maxrss) / 1024 // KiB on Linux
	}
	if n, ok := DeviceMemUsed(be); ok && be.Name() != "cuda/emu" {
		r.DeviceMiB = float64(n) / (1 << 20)
	}
}

// randomImages is n random uint8 images of cfg's shape: the benchmark's data (its values do not change the work).
func randomImages(cfg config.Config, n int) *data.Images {
	C, S := cfg.Data.Channels, cfg.Data.ImageSize
	m := &data.Images{C: C, H: S, W: S, Pix: make([]uint8, n*C*S*S)}
	r := rand.New(rand.NewSource(1))
	r.Read(m.Pix)
	return m
}

// BenchTrain times steps training steps of cfg on be after warmup untimed ones, on random images, through the
// trainer's own step (the device-resident path on a GPU backend): forward, backward, clipping, AdamW and EMA. Its
// run directory is a temporary one, removed afterwards; nothing is checkpointed or sampled.
func BenchTrain(ctx context.Context, cfg config.Config, be ops.Backend, steps, warmup int, log *zap.Logger) (BenchResult, error) {
	res := BenchResult{Steps: steps, Warmup: warmup, Device: be.Name()}
	if steps < 1 || warmup < 0 {
		return res, fmt.Errorf("train: bench: %d steps after %d warm-up steps", steps, warmup)
	}
	if log == nil {
		log = zap.NewNop()
	}
	dir, err := os.MkdirTemp("", "ddpm-bench-")
	if err != nil {
		return res, fmt.Errorf("train: bench: %w", err)
	}
	defer os.RemoveAll(dir)
	cfg.Run.Dir = dir
	cfg.Train.MaxSteps, cfg.Train.Epochs, cfg.Train.MaxMinutes = warmup+steps, 0, 0
	cfg.Sample.Count = 1
	n := max(cfg.Train.BatchSize, min(1024, 4*cfg.Train.BatchSize))
	tr, err := setup(cfg, Options{Backend: be, Dataset: randomImages(cfg, n)}, log)
	if err != nil {
		return res, err
	}
	defer tr.close()
	one := func() error {
		if err := ctx.Err(); err != nil {
			return err
		}
		_, gnorm, err := tr.step()
		if err != nil {
			return err
		}
		tr.update(gnorm)
		return nil
	}
	el, err := timeSteps(be, warmup, steps, one)
	if err != nil {
		return res, err
	}
	res.Images = tr.B * tr.A
	res.Seconds = el
	res.ImagesPerSec = float64(res.Images*steps) / el
	res.GFLOPs = 3 * float64(tr.unet.ForwardFLOPs(tr.B)) * float64(tr.A*steps) / el / 1e9
	res.MsPerStep = 1e3 * el / float64(steps)
	benchMemory(&res, be)
	return res, nil
}

// BenchSample times steps reverse-diffusion steps (one network evaluation and one fused DDPM update each, at
// batch images) after warmup untimed ones, with weights (nil: the model's seeded initialisation; the values do not
// change the work).
func BenchSample(ctx context.Context, cfg config.Config, be ops.Backend, weights []float32, batch, steps, warmup int) (BenchResult, error) {
	res := BenchResult{Steps: steps, Warmup: warmup, Device: be.Name(), Images: batch}
	if steps < 1 || warmup < 0 || batch < 1 {
		return res, fmt.Errorf("train: bench: %d steps after %d warm-up steps at batch %d", steps, warmup, batch)
	}
	C, S := cfg.Data.Channels, cfg.Data.ImageSize
	D := C * S * S
	u, err := model.New(be, cfg.Model, C, S, batch)
	if err != nil {
		return res, fmt.Errorf("train: bench: %w", err)
	}
	if weights != nil {
		be.Upload(u.Params(), weights)
	} else {
		u.Init(cfg.Train.Seed)
	}
	u.SetTrain(false, 0, 0)
	host, err := diffusion.New(cfg.Diffusion.Schedule, cfg.Diffusion.Timesteps, cfg.Diffusion.BetaStart, cfg.Diffusion.BetaEnd)
	if err != nil {
		return res, fmt.Errorf("train: bench: %w", err)
	}
	sch, err := sampler.UploadSchedule(be, host, cfg.Sample.Variance)
	if err != nil {
		return res, fmt.Errorf("train: bench: %w", err)
	}
	x, y, z, t := be.Alloc(batch*D), be.Alloc(batch*D), be.Alloc(batch*D), be.Alloc(batch)
	be.Normal(1, rng.StreamSampler, 0, x)
	T := cfg.Diffusion.Timesteps
	k := 0
	one := func() error {
		if err := ctx.Err(); err != nil {
			return err
		}
		tt := T - 1 - k%T
		be.Fill(t, float32(tt))
		eps := u.Forward(x, t, batch)
		be.Normal(1, rng.StreamSampler, uint64(k+1)*uint64(batch*D), z)
		be.Posterior(sch, batch, D, cfg.Sample.Clip, t, x, eps, z, y)
		x, y = y, x
		k++
		return nil
	}
	el, err := timeSteps(be, warmup, steps, one)
	if err != nil {
		return res, err
	}
	res.Seconds = el
	res.ImagesPerSec = float64(batch*steps) / el
	res.GFLOPs = float64(u.ForwardFLOPs(batch)) * float64(steps) / el / 1e9
	res.MsPerStep = 1e3 * el / float64(steps)
	benchMemory(&res, be)
	return res, nil
}

// timeSteps runs one warmup times untimed, then steps times, and returns the seconds the timed steps took, from
// the first launch to the device's completion of the last.
func timeSteps(be ops.Backend, warmup, steps int, one func() error) (float64, error) {
	for i := 0; i < warmup; i++ {
		if err := one(); err != nil {
			return 0, err
		}
	}
	if err := be.Sync(); err != nil {
		return 0, fmt.Errorf("train: bench warm-up: %w", err)
	}
	t0 := time.Now()
	for i := 0; i < steps; i++ {
		if err := one(); err != nil {
			return 0, err
		}
	}
	if err := be.Sync(); err != nil {
		return 0, fmt.Errorf("train: bench: %w", err)
	}
	return time.Since(t0).Seconds(), nil
}
