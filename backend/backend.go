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
// The backend starts in FP32; SetPrecision applies train.precision (and device.tensor_cores, its older spelling).
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
		return be, func() error { return errors.Join(be.Close(), d.Close()) }, nil
	}
	return nil, nil, fmt.Errorf("-device %q: allowed: cpu, cuda, emu", device)
}

// convImpl is a backend that names the kernels of its convolutions (the CPU: oneDNN's implementation).
type convImpl interface{ ConvImpl() string }

// SetPrecision applies cfg's train.precision to be before anything runs on it, and logs it (log nil: silent):
//
//	fp32  the default; nothing to do on a backend without ops.PrecisionSetter
//	tf32  GPUs of compute capability 8.0 or newer; refused elsewhere — except when it comes from the older
//	      device.tensor_cores, which the CPU backend and older GPUs always ignored: then a warning, and FP32
//	bf16  a backend with ops.PrecisionSetter that can (the CPU with AVX512-BF16 or AMX, a GPU of compute capability
//	      8.0 or newer); an error naming what is missing otherwise — never a silent FP32 or an emulated bf16
//	auto  bf16 where the backend accepts it, else fp32; log says which and why
//
// The error is a configuration error (the program exits with status 2).
func SetPrecision(be ops.Backend, cfg config.Config, log *zap.Logger) error {
	if log == nil {
		log = zap.NewNop()
	}
	if cfg.Train.Precision == config.PrecisionAuto {
		return setAuto(be, log)
	}
	p, err := ops.ParsePrecision(cfg.Train.Precision)
	if err != nil {
		return fmt.Errorf("train.precision: %w", err)
	}
	legacy := cfg.Device.TensorCores
	if legacy {
		log.Warn(config.TensorCoresNote)
	}
	ps, ok := be.(ops.PrecisionSetter)
	switch {
	case !ok && p != ops.FP32:
		return fmt.Errorf("train.precision = %q: the %s backend runs fp32 only", p, be.Name())
	case ok:
		if err := ps.SetPrecision(p); err != nil {
			if !legacy {
				return fmt.Errorf("train.precision = %q on %s: %w", p, be.Name(), err)
			}
			log.Warn("device.tensor_cores: no TF32 here; the convolutions stay FP32", zap.String("device", be.Name()), zap.Error(err))
			p = ops.FP32
		}
	}
	fields := []zap.Field{zap.String("precision", string(p)), zap.String("device", be.Name())}
	if ci, ok := be.(convImpl); ok {
		fields = append(fields, zap.String("conv", ci.ConvImpl()))
	}
	log.Info("precision", fields...)
	return nil
}

// setAuto is train.precision = "auto": bf16 where the backend runs it natively, fp32 otherwise.
func setAuto(be ops.Backend, log *zap.Logger) error {
	p, why := ops.FP32, "the backend has no bf16"
	if ps, ok := be.(ops.PrecisionSetter); ok {
		if err := ps.SetPrecision(ops.BF16); err == nil {
			p, why = ops.BF16, "the backend runs bf16 natively"
		} else {
			why = err.Error()
			if err := ps.SetPrecision(ops.FP32); err != nil {
				return fmt.Errorf("train.precision = \"auto\" on %s: %w", be.Name(), err)
			}
		}
	}
	fields := []zap.Field{zap.String("precision", string(p)), zap.String("device", be.Name()), zap.String("why", why)}
	if ci, ok := be.(convImpl); ok {
		fields = append(fields, zap.String("conv", ci.ConvImpl()))
	}
	log.Info("precision auto", fields...)
	return nil
}

// HostKeptLen is the CPU backend's kept lengths of convolution inputs (ops.ConvInputKeeper.KeptLen) at a
// train.precision value, without opening it: what -dry-run's memory estimate counts (train.DryRunMemory).
func HostKeptLen(precision string) cpu.KeptLens { return cpu.HostKeptLens(precision) }
