//go:build !amd64 || purego

package vec

// Available is false: the kernels are amd64 assembly.
const Available = false

// SiLU panics: there is no kernel on this architecture.
func SiLU(x, y []float32) { panic("vec.SiLU: no AVX-512") }

// SiLUBackward panics: there is no kernel on this architecture.
func SiLUBackward(x, dy, dx []float32) { panic("vec.SiLUBackward: no AVX-512") }

// Add panics: there is no kernel on this architecture.
func Add(dst, src []float32) { panic("vec.Add: no AVX-512") }

// BF16 reports no bfloat16 instructions: the detection is amd64 assembly.
func BF16() (avx512bf16, amxbf16 bool) { return false, false }
