package opstest

import (
	"fmt"
	"math"

	"github.com/ddpmgo/ddpm/ops"
)

// Tolerance bands of precision bf16 (ops.BF16), for a backend that rounds the inputs of its matmul-heavy ops
// (convolutions, linear layers, the attention matmuls) to bfloat16 and accumulates in float32, against an FP32 (or
// float64) reference. Written once here so that every backend (cpu, cuda) runs the same bands.
//
// The derivation. bfloat16 has an 8-bit significand (7 stored bits and the implicit one): rounding to nearest even
// has a relative error of at most u = 2^-8, and for values whose low bits are random, an error spread evenly over
// [−u/2·ulp…] with a root mean square of u/√3 relative to the value. A product of two rounded inputs is exact in
// float32, so each term of a dot product carries a relative error of rms √(2/3)·u (two independent roundings); a
// sum of K such terms of random signs then has a relative error of the same rms √(2/3)·u ≈ 3.2e-3 however long the
// reduction is, because the errors and the sum both grow as √K. The float32 accumulation adds at most K·2^-24
// (the worst-case bound of a K-term sum), the only place where the reduction length enters; it is small for the
// U-Net's K ≤ 2304·(batch·pixels) only when K stays below ~10^4, which the cases do. The band is
//
//	tol = stages · amp · 4·√(2/3)·u  +  K·2^-24
//
// with 4 standard deviations of headroom (outputs of a few elements, e.g. a bias gradient of two channels, spread
// widely around the rms), stages the number of bf16 matmuls in sequence that an output depends on (1 for a
// convolution or a linear layer; 2 for attention: S = qkᵀ, then o = P·v, and dq, dk through dS), and amp how much
// the ops between them amplify a relative error (attention: an error δ in a logit changes P by δ·|S| relative, so
// amp = 1 + the logits' standard deviation).
//
// A bf16 backend is also checked tightly, against a reference that rounds the same operands to bf16 and computes in
// float64 (cpu.New64 at bf16): there the products are the same numbers and only the summation order differs, so the
// FP32 tolerances of the table apply unchanged. The bands here bound what bf16 costs against FP32.
type BF16Band struct {
	K      int     // the longest reduction of the op (its FP32 accumulation)
	Stages int     // bf16 matmuls in sequence
	Amp    float64 // amplification of a relative error between them (1: none)
	Why    string  // the op's own reasoning, if any beyond the formula
}

// UnitRoundoff is the unit roundoff of precision p's inputs: 2^-8 for bfloat16 (an 8-bit significand), 2^-11 for
// TF32 (11 bits); 0 for FP32, whose cases keep their own tolerances.
func UnitRoundoff(p ops.Precision) float64 {
	switch p {
	case ops.BF16:
		return 0x1p-8
	case ops.TF32:
		return 0x1p-11
	}
	return 0
}

// BandTol is the band's tolerance on the normalized error at precision p (see BF16Band for the derivation, which
// holds for any significand width u): stages·amp·4·√(2/3)·u + K·2^-24.
func BandTol(p ops.Precision, k, stages int, amp float64) float64 {
	return float64(stages)*amp*4*math.Sqrt(2.0/3)*UnitRoundoff(p) + float64(k)*0x1p-24
}

// BF16Tol is BandTol at bf16.
func BF16Tol(k, stages int, amp float64) float64 { return BandTol(ops.BF16, k, stages, amp) }

// Tol is the band's tolerance at bf16.
func (b BF16Band) Tol() float64 { return BF16Tol(b.K, b.Stages, b.Amp) }

// describe says where the band's tolerance at p comes from.
func (b BF16Band) describe(p ops.Precision) string {
	s := fmt.Sprintf("%s band: %d stage(s) × amplification %.3g × 4·√(2/3)·%g + K·2^-24 with K = %d", p, b.Stages, b.Amp, UnitRoundoff(p), b.K)
	if b.Why != "" {
		s += "; " + b.Why
	}
	return s
}

func (b BF16Band) String() string { return b.describe(ops.BF16) }

// BF16 is the Option of a backend running at precision bf16 against an FP32 reference: every case with a bf16 band
// (those of Conv2D, Linear and Attention) takes the band's tolerance; the others keep their FP32 tolerance, because
// bf16 changes nothing outside the matmul-heavy ops.
func BF16() Option { return AtPrecision(ops.BF16, false) }

// AtPrecision is BF16 for any precision p: each case with a band takes the larger of its own tolerance and the
// band's at p. With onlyBanded, the cases without a band (ops that p does not change) are left out — for a backend
// that runs only some of its ops at p, which then selects those with Only as well.
func AtPrecision(p ops.Precision, onlyBanded bool) Option {
	return func(c *Case) bool {
		if c.BF16 == nil {
			return !onlyBanded
		}
		if tol := BandTol(p, c.BF16.K, c.BF16.Stages, c.BF16.Amp); tol > c.Tol {
			c.Tol, c.Why = tol, c.BF16.describe(p)
		}
		return true
	}
}
