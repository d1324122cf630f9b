//go:build amd64 && !purego

package vec

import "math"

// The attention kernels: at the U-Net's heads (64 pixels, 8 channels a head) attention is its softmax and the
// softmax's gradient, elementwise over N·heads·L² elements (8.4 M in the celeba32 step at batch 64), not its
// GEMMs; the scalar loops of package cpu took ~10× the GEMMs' time.

//go:noescape
func maxAVX512(x *float32, n int, m *[16]float32)

//go:noescape
func expShiftAVX512(x *float32, n int, m float32)

//go:noescape
func dot64AVX512(x, y *float32, n int, p *[32]float64)

//go:noescape
func softmaxGradAVX512(p, d *float32, n int, dot float64)

//go:noescape
func roundBF16AVX512(x, y *float32, n int)

// Softmax replaces r by softmax(r): m = max r (the 16-lane maxima of VMAXPS, then in lane order), e[i] = exp(r[i] −
// m) by the 16-lane kernel of SiLU (a tail through a padded block), s = Sum64(e), r[i] = e[i]·float32(1/s) as
// Affine. A NaN anywhere makes the row NaN, as in the scalar loop. It panics when !Available.
func Softmax(r []float32) {
	if !Available {
		panic("vec.Softmax: no AVX-512")
	}
	n := len(r) &^ 15
	lanes := [16]float32{}
	for i := range lanes {
		lanes[i] = float32(math.Inf(-1))
	}
	if n > 0 {
		maxAVX512(&r[0], n, &lanes)
	}
	m := lanes[0]
	for _, v := range lanes[1:] {
		m = max(m, v)
	}
	for _, v := range r[n:] {
		m = max(m, v)
	}
	if n > 0 {
		expShiftAVX512(&r[0], n, m)
	}
	if t := len(r) - n; t > 0 {
		var b [16]float32
		copy(b[:], r[n:])
		expShiftAVX512(&b[0], 16, m)
		copy(r[n:], b[:t])
	}
	inv := float32(1 / Sum64(r))
	affineRun(false, r, r, 0, inv, 0, nil)
}

// SoftmaxGrad is the gradient of a softmax row at its input, in place: with p the row's output and d the gradient
// at it, dot = Σ p[i]·d[i] in float64 (each product added by one fused multiply-add, in the order of Sum64; the
// products are exact), d[i] = float32(float64(p[i])·(float64(d[i]) − dot)) (p at least as long as d). It panics
// when !Available.
func SoftmaxGrad(p, d []float32) {
	if !Available {
		panic("vec.SoftmaxGrad: no AVX-512")
	}
	p = p[:len(d)]
	var part [32]float64
	n := len(d) &^ 31
	if n > 0 {
		dot64AVX512(&p[0], &d[0], n, &part)
	}
	for i := n; i < len(d); i++ {
		part[i-n] = math.FMA(float64(p[i]), float64(d[i]), part[i-n])
	}
	dot := combine32(&part)
	m := len(d) &^ 7
	if m > 0 {
		softmaxGradAVX512(&p[0], &d[0], m, dot)
	}
	for i := m; i < len(d); i++ {
		d[i] = float32(float64(p[i]) * (float64(d[i]) - dot))
	}
}

// RoundBF16 sets dst[i] to src[i] rounded to the nearest bfloat16 (ties to even), as a float32 (package cpu's
// RoundBF16, bit for bit; dst at least as long as src, and may be src). It panics when !Available.
func RoundBF16(dst, src []float32) {
	if !Available {
		panic("vec.RoundBF16: no AVX-512")
	}
	n := len(src) &^ 15
	dst = dst[:len(src)]
	if n > 0 {
		roundBF16AVX512(&src[0], &dst[0], n)
	}
	if t := len(src) - n; t > 0 {
		var b [16]float32
		copy(b[:], src[n:])
		roundBF16AVX512(&b[0], &b[0], 16)
		copy(dst[n:], b[:t])
	}
}
