package train

import (
	"fmt"
	"os"

	"go.uber.org/zap"

	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/ops"
)

// TraceStep sets a run of cfg up on be with images random images (BenchTrain's data; their values do not change the
// work; 0 takes BenchTrain's count) and runs two training steps with a read between them: step 1 draws the epoch's
// order, an upload outside the step proper. mark(true) is called before step 2, a steady-state step, and mark(false)
// after it: the step that train/testdata/launches_tiny_step.golden records. Over a driver that notes launches and runs
// none, this is how a step's launch list is taken without a GPU (internal/gpureport). Nothing is written outside a
// temporary run directory, removed afterwards.
func TraceStep(cfg config.Config, be ops.Backend, images int, mark func(on bool)) error {
	dir, err := os.MkdirTemp("", "ddpm-trace-")
	if err != nil {
		return fmt.Errorf("train: trace: %w", err)
	}
	defer os.RemoveAll(dir)
	cfg.Run.Dir = dir
	cfg.Train.MaxSteps, cfg.Train.Epochs, cfg.Train.MaxMinutes = 2, 0, 0
	cfg.Train.CheckpointEvery = 0
	cfg.Sample.Count = 1
	if images <= 0 {
		images = traceImages(cfg)
	}
	tr, err := setup(cfg, Options{Backend: be, Dataset: randomImages(cfg, images)}, zap.NewNop(), nil)
	if err != nil {
		return err
	}
	defer tr.close()
	if err := tr.step(); err != nil {
		return err
	}
	if _, err := tr.read(); err != nil {
		return err
	}
	mark(true)
	err = tr.step()
	mark(false)
	return err
}

// traceImages is TraceStep's default data set size: four batches, at most 1024 images, at least one batch.
func traceImages(cfg config.Config) int {
	return max(cfg.Train.BatchSize, min(1024, 4*cfg.Train.BatchSize))
}

// TracePeak runs TraceStep on be, a fresh backend over a driver whose peak of live device bytes peak reads (such
// as cuda.DryDriver's MemPeak), and returns that peak less the trace's resident data set (its random images and
// their order, on a backend that holds the set; Memory counts the real data set apart).
func TracePeak(cfg config.Config, be ops.Backend, peak func() int64) (int64, error) {
	images := traceImages(cfg)
	if err := TraceStep(cfg, be, images, func(bool) {}); err != nil {
		return 0, err
	}
	p := peak()
	size := int64(images) * int64(cfg.Data.Channels*cfg.Data.ImageSize*cfg.Data.ImageSize)
	if _, ok := be.(ops.Feeder); ok && size <= residentMaxBytes {
		p -= size + 4*int64(images)
	}
	return p, nil
}
