//go:build !cuda

package train

import "testing"

// TestEmuStepParityTiny: two training steps of configs/tiny.toml and a DDIM sample on the CUDA kernels over the
// emulator (the device-resident step: data set, batch gather, flips and timesteps on the device) match the CPU
// backend (see parity_test.go for the tolerances).
func TestEmuStepParityTiny(t *testing.T) { stepParity(t, "emu") }
