// Package backend opens the op set a -device flag names. It is the one place that knows every backend: cmd/ uses
// it, and the packages above the op set (model, sampler, train) never name one.
package backend

import (
	"errors"
	"fmt"

	"go.uber.org/zap"

	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/cpu"
	"github.com/ddpmgo/ddpm/cuda"
	"github.com/ddpmgo/ddpm/ops"
)

// Usage is the help text of a -device flag.
const Usage = "backend: cpu | cuda (NVIDIA GPU, binaries built with -tags cuda: make build-cuda) | emu (the CUDA kernels on the CPU emulator)"

// Open returns the backend a -device flag names and a function that releases it:
//
//	cpu   package cpu (OpenBLAS GEMMs, goroutines)
//	cuda  the CUDA kernels on GPU 0 (binaries built with -tags cuda; the default build says so and fails)
//	emu   the same CUDA kernels and launchers over the CPU emulator (default build; slow, for tests and parity)
//
// dc.TensorCores selects the TF32 convolutions on cuda and emu; a GPU older than compute capability 8.0 keeps the
// FP32 kernels, and log (nil: silent) says so.
func Open(device string, dc config.Device, log *zap.Logger) (ops.Backend, func() error, error) {
	return OpenLocal(device, dc, log, 0)
}

// OpenLocal is Open for the process of local rank localRank on its machine (data-parallel training, one GPU per
// process): cuda opens GPU localRank mod the GPUs visible to the process (cuda.OpenLocal).
func OpenLocal(device string, dc config.Device, log *zap.Logger, localRank int) (ops.Backend, func() error, error) {
	if log == nil {
		log = zap.NewNop()
	}
	switch device {
	case "cpu":
		return cpu.New(), func() error { return nil }, nil
	case "cuda", "emu":
		d, err := cuda.OpenLocal(device, localRank)
		if err != nil {
			return nil, nil, fmt.Errorf("-device %s: %w", device, err)
		}
		be, err := cuda.NewBackend(d)
		if err != nil {
			d.Close()
			return nil, nil, fmt.Errorf("-device %s: %w", device, err)
		}
		if dc.TensorCores && !be.SetTensorCores(true) {
			log.Warn("device.tensor_cores: this GPU has no TF32 tensor cores (compute capability < 8.0); the convolutions stay FP32",
				zap.String("device", d.Name()))
		}
		return be, func() error { return errors.Join(be.Close(), d.Close()) }, nil
	}
	return nil, nil, fmt.Errorf("-device %q: allowed: cpu, cuda, emu", device)
}
