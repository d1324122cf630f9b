// Package memtrace measures a GPU training step's device memory without a GPU: the step traced over cuda's
// DryDriver. It sits above both train and backend (train's tests import backend, so backend cannot import train).
package memtrace

import (
	"errors"
	"fmt"

	"github.com/ddpmgo/ddpm/backend"
	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/cuda"
	"github.com/ddpmgo/ddpm/train"
)

// traceMemory is what the dry driver of a trace reports as its total: enough that the trace's own memory check
// never refuses a batch (the caller compares the peak with a real device).
const traceMemory = 1 << 50

// DeviceStep is a train.DeviceTracer: it sets cfg's run up on a fresh cuda.Backend over a cuda.DryDriver (nothing
// runs, no device memory is held; tensor cores on, as on a GPU of compute capability 8.0 or newer), at cfg's
// train.batch_size and train.precision (backend.SetPrecision: "auto" is bf16 there), runs train.TraceStep's set-up
// and two steps (train.TracePeak), and returns the peak of the live device bytes with the backend's own part
// (cuda.OwnMemory). No GPU is opened: -dry-run and the memory check before a GPU run use it. Because it runs the
// launchers themselves, a launcher that holds more scratch shows up here without a change to this package.
func DeviceStep(cfg config.Config) (train.DeviceStep, error) {
	d := &cuda.DryDriver{Memory: traceMemory}
	be, err := cuda.NewBackend(d)
	if err != nil {
		return train.DeviceStep{}, err
	}
	if err := backend.SetPrecision(be, cfg, nil); err != nil {
		return train.DeviceStep{}, errors.Join(err, be.Close())
	}
	peak, err := train.TracePeak(cfg, be, d.MemPeak)
	own := be.OwnMemory()
	if cerr := be.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("closing the traced backend: %w", cerr)
	}
	if err != nil {
		return train.DeviceStep{}, err
	}
	return train.DeviceStep{Batch: cfg.Train.BatchSize, Precision: string(be.Precision()), Peak: peak,
		Scratch: own.Scratch, Packed: own.Packed, Fixed: own.Fixed}, nil
}
