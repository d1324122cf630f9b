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

// Sum64 panics: there is no kernel on this architecture.
func Sum64(x []float32) float64 { panic("vec.Sum64: no AVX-512") }

// SumSqDev64 panics: there is no kernel on this architecture.
func SumSqDev64(x []float32, mu float64, w []float32) float64 { panic("vec.SumSqDev64: no AVX-512") }

// SumDyDyXhat panics: there is no kernel on this architecture.
func SumDyDyXhat(dy, x []float32, mu, rstd float64, w []float32) (float64, float64) {
	panic("vec.SumDyDyXhat: no AVX-512")
}

// Affine panics: there is no kernel on this architecture.
func Affine(x, y []float32, m, a, b float32, pf []float32) { panic("vec.Affine: no AVX-512") }

// GroupNormDx panics: there is no kernel on this architecture.
func GroupNormDx(dy, x, dx []float32, mu, rstd, gc, m1, m2 float64, pf1, pf2 []float32, set bool) {
	panic("vec.GroupNormDx: no AVX-512")
}

// GroupNormSiLUGrad panics: there is no kernel on this architecture.
func GroupNormSiLUGrad(x, dy, gn []float32, m, a, b float32, mu, rstd float64, w []float32) (float64, float64) {
	panic("vec.GroupNormSiLUGrad: no AVX-512")
}

// AffineSiLU panics: there is no kernel on this architecture.
func AffineSiLU(x, y []float32, m, a, b float32, pf []float32) { panic("vec.AffineSiLU: no AVX-512") }

// Softmax panics: there is no kernel on this architecture.
func Softmax(r []float32) { panic("vec.Softmax: no AVX-512") }

// SoftmaxGrad panics: there is no kernel on this architecture.
func SoftmaxGrad(p, d []float32) { panic("vec.SoftmaxGrad: no AVX-512") }

// RoundBF16 panics: there is no kernel on this architecture.
func RoundBF16(dst, src []float32) { panic("vec.RoundBF16: no AVX-512") }
