// Package bench times training and sampling steps the way bin/train -bench and bin/sample -bench report them:
// images per second, model GFLOP/s, milliseconds per step and the peak memory, on any backend.
package bench

import (
	"context"
	"fmt"
	"syscall"
	"time"

	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/diffusion"
	"github.com/ddpmgo/ddpm/model"
	"github.com/ddpmgo/ddpm/ops"
	"github.com/ddpmgo/ddpm/rng"
	"github.com/ddpmgo/ddpm/sampler"
)

// Result is what a benchmark measured.
type Result struct {
	Steps, Warmup int
	Images        int     // images per timed step (batch × grad_accum for training)
	ImagesPerSec  float64 // Images·Steps / Seconds
	GFLOPs        float64 // model FLOPs per second / 1e9: 3 × ForwardFLOPs per training image, 1 × per sampling image
	MsPerStep     float64
	Seconds       float64
	PeakRSSMiB    float64 // the process's peak resident set (getrusage ru_maxrss)
	DeviceMiB     float64 // device memory in use after the run (cuda; 0 where the device is host memory)
	Device        string
	Precision     string // the backend's precision (ops.PrecisionSetter; fp32 without it)
	Conv          string // the kernels of its convolutions where it names them (the CPU: oneDNN's implementation)
}

// Describe fills r's Device, Precision and Conv from be.
func Describe(r *Result, be ops.Backend) {
	r.Device, r.Precision = be.Name(), string(ops.FP32)
	if ps, ok := be.(ops.PrecisionSetter); ok {
		r.Precision = string(ps.Precision())
	} else if tc, ok := be.(interface{ TensorCores() bool }); ok && tc.TensorCores() {
		r.Precision = string(ops.TF32)
	}
	if ci, ok := be.(interface{ ConvImpl() string }); ok {
		r.Conv = ci.ConvImpl()
	}
}

// Setup is the benchmark's precision and kernels as the summary line gives them: "precision bf16 (conv
// jit_bf16:avx512_core_bf16)".
func (r Result) Setup() string {
	if r.Conv == "" {
		return "precision " + r.Precision
	}
	return fmt.Sprintf("precision %s (conv %s)", r.Precision, r.Conv)
}

// PeakMiB is the memory the benchmark line reports: the peak RSS plus, on a GPU, the device memory in use. (The
// emulator's "device" memory is on the C heap, already inside the RSS.)
func (r Result) PeakMiB() float64 { return r.PeakRSSMiB + r.DeviceMiB }

// Line is the benchmark's summary line: "bench: <img/s> img/s, <GFLOP/s> GFLOP/s, <ms> ms/step, <MiB> MiB peak".
func (r Result) Line() string {
	return fmt.Sprintf("bench: %.1f img/s, %.2f GFLOP/s, %.2f ms/step, %.0f MiB peak", r.ImagesPerSec, r.GFLOPs,
		r.MsPerStep, r.PeakMiB())
}

// Memory fills the memory fields of r after a run on be.
func Memory(r *Result, be ops.Backend) {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		r.PeakRSSMiB = float64(ru.Maxrss) / 1024 // KiB on Linux
	}
	if m, ok := be.(interface{ DeviceMemUsed() int64 }); ok {
		r.DeviceMiB = float64(m.DeviceMemUsed()) / (1 << 20)
	}
}

// Sample times steps reverse-diffusion steps (one network evaluation and one fused DDPM update each, at
// batch images) after warmup untimed ones, with weights (nil: the model's seeded initialisation; the values do not
// change the work).
func Sample(ctx context.Context, cfg config.Config, be ops.Backend, weights []float32, batch, steps, warmup int) (Result, error) {
	res := Result{Steps: steps, Warmup: warmup, Images: batch}
	Describe(&res, be)
	if steps < 1 || warmup < 0 || batch < 1 {
		return res, fmt.Errorf("bench: %d steps after %d warm-up steps at batch %d", steps, warmup, batch)
	}
	C, S := cfg.Data.Channels, cfg.Data.ImageSize
	D := C * S * S
	u, err := model.New(be, cfg.Model, C, S, batch)
	if err != nil {
		return res, fmt.Errorf("bench: %w", err)
	}
	if weights != nil {
		be.Upload(u.Params(), weights)
	} else {
		u.Init(cfg.Train.Seed)
	}
	u.SetTrain(false, 0, 0)
	host, err := diffusion.New(cfg.Diffusion.Schedule, cfg.Diffusion.Timesteps, cfg.Diffusion.BetaStart, cfg.Diffusion.BetaEnd)
	if err != nil {
		return res, fmt.Errorf("bench: %w", err)
	}
	sch, err := sampler.UploadSchedule(be, host, cfg.Sample.Variance)
	if err != nil {
		return res, fmt.Errorf("bench: %w", err)
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
	el, err := Time(be, warmup, steps, one)
	if err != nil {
		return res, err
	}
	res.Seconds = el
	res.ImagesPerSec = float64(batch*steps) / el
	res.GFLOPs = float64(u.ForwardFLOPs(batch)) * float64(steps) / el / 1e9
	res.MsPerStep = 1e3 * el / float64(steps)
	Memory(&res, be)
	return res, nil
}

// Time runs one warmup times untimed, then steps times, and returns the seconds the timed steps took, from
// the first launch to the device's completion of the last.
func Time(be ops.Backend, warmup, steps int, one func() error) (float64, error) {
	for i := 0; i < warmup; i++ {
		if err := one(); err != nil {
			return 0, err
		}
	}
	if err := be.Sync(); err != nil {
		return 0, fmt.Errorf("bench warm-up: %w", err)
	}
	t0 := time.Now()
	for i := 0; i < steps; i++ {
		if err := one(); err != nil {
			return 0, err
		}
	}
	if err := be.Sync(); err != nil {
		return 0, fmt.Errorf("bench: %w", err)
	}
	return time.Since(t0).Seconds(), nil
}
