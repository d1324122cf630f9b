package train

import (
	"errors"
	"fmt"

	"go.uber.org/zap"

	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/cpu"
	"github.com/ddpmgo/ddpm/cuda"
	"github.com/ddpmgo/ddpm/ops"
)

// Devices lists the -device values bin/train and bin/sample accept.
var Devices = []string{"cpu", "cuda", "emu"}

// OpenBackend returns the backend a -device flag names, with the default [device] settings; see Open.
func OpenBackend(device string) (ops.Backend, error) {
	be, _, err := Open(device, config.Device{}, nil)
	return be, err
}

// Open returns the backend a -device flag names and a function that releases it:
//
//	cpu   package cpu (OpenBLAS GEMMs, goroutines)
//	cuda  the CUDA kernels on GPU 0 (binaries built with -tags cuda; the default build says so and fails)
//	emu   the same CUDA kernels and launchers over the CPU emulator (default build; slow, for tests and parity)
//
// dc.TensorCores selects the TF32 convolutions on cuda and emu; a GPU older than compute capability 8.0 keeps the
// FP32 kernels, and log (nil: silent) says so.
func Open(device string, dc config.Device, log *zap.Logger) (ops.Backend, func() error, error) {
	if log == nil {
		log = zap.NewNop()
	}
	switch device {
	case "cpu":
		return cpu.New(), func() error { return nil }, nil
	case "cuda", "emu":
		d, err := cuda.Open(device)
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

// DeviceMemUsed is the device memory a backend has in use, in bytes, and whether it can say (cuda and emu can;
// the CPU backend's memory is the process's, see the peak RSS).
func DeviceMemUsed(be ops.Backend) (int64, bool) {
	if m, ok := be.(interface{ MemUsed() int64 }); ok {
		return m.MemUsed(), true
	}
	return 0, false
}
