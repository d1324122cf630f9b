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
		images = max(cfg.Train.BatchSize, min(1024, 4*cfg.Train.BatchSize))
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
