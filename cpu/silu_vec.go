package cpu

import "github.com/ddpmgo/ddpm/cpu/internal/vec"

// useAVX512 selects the 16-lane SiLU kernels of package vec where the CPU has AVX-512F
// (see there for why); tests switch it off to compare with the scalar loop.
var useAVX512 = vec.Available

// siluVec runs vec.SiLU and reports true, or reports false when it is unavailable.
func siluVec(x, y []float32) bool {
	if !useAVX512 {
		return false
	}
	vec.SiLU(x, y)
	return true
}

// siluBwdVec runs vec.SiLUBackward and reports true, or reports false when it is unavailable.
func siluBwdVec(x, dy, dx []float32) bool {
	if !useAVX512 {
		return false
	}
	vec.SiLUBackward(x, dy, dx)
	return true
}
