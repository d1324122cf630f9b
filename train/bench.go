package train

import (
	"context"
	"fmt"
	"math/rand"
	"os"

	"go.uber.org/zap"

	"github.com/ddpmgo/ddpm/bench"
	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/data"
	"github.com/ddpmgo/ddpm/ops"
)

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
//
// With a Collective of N ranks (nil: one process) every rank runs its shard of the global batch with the gradient
// all-reduce, and the result is the aggregate: the global batch's images per second over the slowest rank's time,
// the peak memory of the largest rank.
func BenchTrain(ctx context.Context, cfg config.Config, be ops.Backend, col Collective, steps, warmup int, log *zap.Logger) (bench.Result, error) {
	res := bench.Result{Steps: steps, Warmup: warmup}
	bench.Describe(&res, be)
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
	tr, err := setup(cfg, Options{Backend: be, Dataset: randomImages(cfg, n), Collective: col}, log, nil)
	if err != nil {
		return res, err
	}
	defer tr.close()
	one := func() error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := tr.step(); err != nil {
			return err
		}
		if tr.pending == windowSize(cfg.Train) { // as often as the loop reads
			_, err := tr.read()
			return err
		}
		return nil
	}
	el, err := bench.Time(be, warmup, steps, one)
	if err != nil {
		return res, err
	}
	bench.Memory(&res, be)
	if tr.ranks > 1 {
		v := []int64{int64(el * 1e9), int64(res.PeakRSSMiB * 1024), int64(res.DeviceMiB * 1024)}
		if err := tr.col.MaxInt64(v); err != nil {
			return res, fmt.Errorf("train: bench: %w", err)
		}
		el, res.PeakRSSMiB, res.DeviceMiB = float64(v[0])/1e9, float64(v[1])/1024, float64(v[2])/1024
		res.Device = fmt.Sprintf("%s ×%d ranks", res.Device, tr.ranks)
	}
	res.Images = tr.B * tr.A
	res.Seconds = el
	res.ImagesPerSec = float64(res.Images*steps) / el
	res.GFLOPs = 3 * float64(tr.unet.ForwardFLOPs(tr.B)) * float64(tr.A*steps) / el / 1e9
	res.MsPerStep = 1e3 * el / float64(steps)
	return res, nil
}
