package train

import (
	"fmt"

	"github.com/ddpmgo/ddpm/cpu"
	"github.com/ddpmgo/ddpm/ops"
)

// Devices lists the -device values bin/train and bin/sample accept.
var Devices = []string{"cpu", "cuda", "emu"}

// OpenBackend returns the backend a -device flag names. Only "cpu" is wired in so far; "cuda" (an NVIDIA GPU) and
// "emu" (the CUDA kernels compiled for the CPU through the emulator) are refused with an error saying so.
func OpenBackend(device string) (ops.Backend, error) {
	switch device {
	case "cpu":
		return cpu.New(), nil
	case "cuda", "emu":
		return nil, fmt.Errorf("-device %s: the GPU backend is not wired into the trainer yet (it arrives in a later release); use -device cpu", device)
	}
	return nil, fmt.Errorf("-device %q: allowed: cpu, cuda, emu", device)
}
