package rng

import (
	"math"
	"math/bits"
)

// UniformFromBits maps a uint32 to a float32 in the open interval (0, 1):
//
//	k = (u >> 8) | 1                 an odd integer in [1, 2^24)
//	v = float32(k) * 2^-24           = k / 2^24
//
// Both steps are exact in float32 (k has at most 24 significant bits; scaling by a power of two only moves the
// exponent), so every IEEE-754 implementation returns the same bits. The result takes 2^23 equally likely values
// (2j+1)/2^24, j in [0, 2^23): never 0 or 1, smallest 2^-24, largest 1-2^-24, symmetric about 1/2 with mean exactly 1/2.
func UniformFromBits(u uint32) float32 {
	return float32((u>>8)|1) * 0x1p-24
}

// Single-precision polynomial coefficients from Cephes (S. L. Moshier): logf.c for log(1+f) on
// [sqrt(1/2)-1, sqrt(2)-1], sinf.c for sin and cos on [-pi/4, pi/4]. Each is written as the shortest decimal that
// rounds to the float32 nearest Cephes' printed coefficient, so Go's constant conversion, g++ and nvcc all read the
// same float32 (the hex form is given for reference); kernels/philox.cuh spells the same digits with an f suffix, and
// the g++ parity test checks every result bit for bit.
const (
	logP8  float32 = 0.070376836    // 0x1.204376p-04
	logP7  float32 = -0.1151461     // -0x1.d7a37p-04
	logP6  float32 = 0.116769984    // 0x1.de4a34p-04
	logP5  float32 = -0.12420141    // -0x1.fcba9ep-04
	logP4  float32 = 0.14249323     // 0x1.23d37ep-03
	logP3  float32 = -0.16668057    // -0x1.555cap-03
	logP2  float32 = 0.20000714     // 0x1.999d58p-03
	logP1  float32 = -0.24999994    // -0x1.fffff8p-03
	logP0  float32 = 0.3333333      // 0x1.555554p-02
	ln2Lo  float32 = -0.00021219444 // -0x1.bd0106p-13; ln 2 ~ ln2Hi + ln2Lo
	ln2Hi  float32 = 0.693359375    // 0x1.63p-01 = 355/512, exact times any exponent in [-24, 0]
	sqrt2  float32 = 1.4142135      // 0x1.6a09e6p+00
	sinS3  float32 = -0.00019515296 // -0x1.9943f2p-13
	sinS2  float32 = 0.008332161    // 0x1.11073cp-07
	sinS1  float32 = -0.16666655    // -0x1.555546p-03
	cosC3  float32 = 2.4433157e-05  // 0x1.99eb9cp-16
	cosC2  float32 = -0.0013887316  // -0x1.6c0c34p-10
	cosC1  float32 = 0.041666646    // 0x1.55554ap-05
	halfPi float32 = 1.5707964      // 0x1.921fb6p+00, pi/2 rounded to float32
)

// logUnit returns ln(k / 2^24) for an odd k in [1, 2^24), the natural log of UniformFromBits' value, in float32.
// The range reduction is integer only: k = m * 2^e with m in [1, 2) (e from the bit length, m = k * 2^-e exact), then
// m in (sqrt 2, 2) is halved so that m is in [sqrt(1/2), sqrt 2] and f = m - 1 is exact (Sterbenz). Then, as in
// Cephes logf,
//
//	ln(k/2^24) = f - f^2/2 + f^3 P(f) + (e - 24) ln 2
//
// with each operation a single rounded float32 op in this exact order. The error is a few ulps (see the tests,
// which check all 2^23 inputs against math.Log).
func logUnit(k uint32) float32 {
	e := bits.Len32(k) - 1                                           // k in [2^e, 2^(e+1))
	m := fmul(float32(k), fmul(float32(uint32(1)<<(23-e)), 0x1p-23)) // k * 2^-e, exact
	if m > sqrt2 {
		m = fmul(m, 0.5)
		e++
	}
	fe := float32(e - 24)
	f := m - 1
	z := fmul(f, f)
	y := fmul(logP8, f)
	y = fmul(y+logP7, f)
	y = fmul(y+logP6, f)
	y = fmul(y+logP5, f)
	y = fmul(y+logP4, f)
	y = fmul(y+logP3, f)
	y = fmul(y+logP2, f)
	y = fmul(y+logP1, f)
	y = y + logP0
	y = fmul(y, f)
	y = fmul(y, z)
	y = y + fmul(fe, ln2Lo)
	y = y - fmul(0.5, z)
	r := f + y
	return r + fmul(fe, ln2Hi)
}

// sinCos2Pi returns sin(2 pi v) and cos(2 pi v) for v = k / 2^24, k odd in [1, 2^24) (UniformFromBits' value).
// The quadrant reduction is exact integer arithmetic: q = round(4v) = (k + 2^21) >> 22 (no ties: k is odd), and
// the remainder d = k - q 2^22 gives r = 4v - q = d 2^-22 in (-1/2, 1/2), exactly. Then x = r * (pi/2) (one
// rounding) lies in (-pi/4, pi/4), where Cephes' sinf/cosf polynomials
//
//	sin x = x + x z (S1 + z (S2 + z S3)),   cos x = 1 - z/2 + z^2 (C1 + z (C2 + z C3)),   z = x^2
//
// are accurate to about 1e-7, and the quadrant q mod 4 rotates (sin, cos) by q right angles.
func sinCos2Pi(k uint32) (sin, cos float32) {
	q := (k + 1<<21) >> 22
	d := int32(k) - int32(q<<22)
	x := fmul(fmul(float32(d), 0x1p-22), halfPi)
	z := fmul(x, x)

	s := fmul(sinS3, z)
	s = fmul(s+sinS2, z)
	s = fmul(s+sinS1, z)
	s = fmul(s, x)
	s = s + x

	c := fmul(cosC3, z)
	c = fmul(c+cosC2, z)
	c = fmul(c+cosC1, z)
	c = fmul(c, z)
	c = c - fmul(0.5, z)
	c = c + 1

	switch q & 3 {
	case 0:
		return s, c
	case 1:
		return c, -s
	case 2:
		return -s, -c
	default:
		return -c, s
	}
}

// fmul is a float32 product rounded on its own: the explicit conversion forbids the compiler to fuse it with a
// following addition into an FMA (Go spec, "Arithmetic operators"), which would change the bits.
func fmul(a, b float32) float32 { return float32(a * b) }

// boxMullerRadius returns sqrt(-2 ln u) for u = UniformFromBits(a), in float32.
func boxMullerRadius(a uint32) float32 {
	l := logUnit((a >> 8) | 1)
	return float32(math.Sqrt(float64(-2 * l))) // correctly rounded: float64 sqrt then rounding is exact for float32
}

// BoxMuller turns two uint32 words into two independent standard normal deviates:
//
//	u1 = UniformFromBits(a),  u2 = UniformFromBits(b),  r = sqrt(-2 ln u1),  theta = 2 pi u2
//	z0 = r cos(theta),  z1 = r sin(theta)
//
// computed in float32 with this package's own ln and sin/cos (logUnit, sinCos2Pi), one correctly rounded square
// root and one product each, so that the CUDA header returns the same bits. Because u1 >= 2^-24 the radius is at
// most sqrt(48 ln 2) ~ 5.77: the tails beyond 5.77 sigma (probability ~8e-9) are cut, which is harmless for
// diffusion noise. The error against exact Box-Muller on the same uniforms is below 5e-7 (1 + |z|).
func BoxMuller(a, b uint32) (z0, z1 float32) {
	r := boxMullerRadius(a)
	s, c := sinCos2Pi((b >> 8) | 1)
	return fmul(r, c), fmul(r, s)
}

// normals4 returns the four normals of one Philox block: BoxMuller(w[0], w[1]) and BoxMuller(w[2], w[3]).
func normals4(w [4]uint32) [4]float32 {
	z0, z1 := BoxMuller(w[0], w[1])
	z2, z3 := BoxMuller(w[2], w[3])
	return [4]float32{z0, z1, z2, z3}
}
