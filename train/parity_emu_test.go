//go:build !cuda

package train

import "testing"

// TestEmuStepParityTiny: two training steps of configs/tiny.toml and a DDIM sample on the CUDA kernels over the
// emulator (the device-resident step: data set, batch gather, flips and timesteps on the device) match the CPU
// backend (see parity_test.go for the tolerances). Parallel with the package's other emulator tests: the emulator
// runs one launch stream on about one core.
func TestEmuStepParityTiny(t *testing.T) {
	t.Parallel()
	stepParity(t, "emu")
}
