//go:build cuda

package train

import "testing"

// TestCUDAStepParityTiny: TestEmuStepParityTiny on the GPU itself (go test -tags cuda on an NVIDIA host).
func TestCUDAStepParityTiny(t *testing.T) { stepParity(t, "cuda") }
