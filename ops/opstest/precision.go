package opstest

import (
	"fmt"
	"math"

	"github.com/ddpmgo/ddpm/ops"
)

// Band is the tolerance of a case's normalized error when the backend under test runs its matmul-heavy ops at
// precision p (ops.Precision: inputs rounded, FP32 accumulation) and the longest sum of products of the case has k
// terms; 0 for FP32 (the case's own tolerance applies). The one place that states it; backends pass it with
// AtPrecision.
//
// An input rounded to nearest with an s-bit significand (8 for bfloat16, 11 for TF32, the implicit bit counted:
// 7 and 10 stored bits) carries a relative error of at most u = 2^-s (half an ulp of 2^(1−s) at a significand of 1),
// spread about evenly over ±u: RMS at most u/√3. A product of two such inputs then
// has an error of RMS u·√(2/3) relative to itself, independent from product to product; over outputs that are sums
// of products of independent signs (random inputs), the normalized error ‖got − ref‖₂/‖ref‖₂ is about that RMS,
// whatever k. The band allows 4 times it (few-term sums of small shapes fluctuate around it; biases, added in FP32,
// only lower it), plus k·2^-24 for the FP32 accumulation of k terms (each addition rounds once, relative 2^-24 of
// the running sum at most):
//
//	Band(p, k) = 4·u·√(2/3) + k·2^-24,   u = 2^-8 for BF16 (≈ 1.28e-2 + k·6e-8), 2^-11 for TF32 (≈ 1.6e-3 + …)
func Band(p ops.Precision, k int) float64 {
	var u float64
	switch p {
	case ops.BF16:
		u = 0x1p-8
	case ops.TF32:
		u = 0x1p-11
	default:
		return 0
	}
	return 4*u*math.Sqrt(2.0/3) + float64(k)*0x1p-24
}

// AtPrecision raises the tolerance of every case with a reduction (Case.Reduction > 0) to Band(p, its reduction),
// for a backend under test that runs at precision p; it keeps only those cases when onlyReductions is true.
func AtPrecision(p ops.Precision, onlyReductions bool) Option {
	return func(c *Case) bool {
		if c.Reduction == 0 {
			return !onlyReductions
		}
		if b := Band(p, c.Reduction); c.Tol < b {
			c.Tol = b
			c.Why = fmt.Sprintf("%s inputs with FP32 accumulation over up to %d terms: opstest.Band = 4·u·√(2/3) + k·2^-24",
				p, c.Reduction)
		}
		return true
	}
}
