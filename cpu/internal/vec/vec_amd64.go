//go:build amd64 && !purego

package vec

import "math"

// The scalar exp32 loop of package cpu costs ~5 ns per element on one core; the U-Net
// evaluates ~190 M SiLU (forward and backward) per celeba32 step at batch 64, which made
// SiLU 17% of the step. These kernels evaluate exp32's polynomial on 16 lanes
// (vec_amd64.s) when the CPU and the OS support AVX-512F.

//go:noescape
func cpuid(leaf, sub uint32) (eax, ebx, ecx, edx uint32)

//go:noescape
func xgetbv0() (eax uint32)

//go:noescape
func siluAVX512(x, y *float32, n int)

//go:noescape
func siluBwdAVX512(x, dy, dx *float32, n int)

//go:noescape
func addAVX512(dst, src *float32, n int)

// hasAVX512 reports whether the CPU has AVX-512F and the OS saves the ZMM state
// (XCR0 bits 1, 2 and 5–7).
func hasAVX512() bool {
	max, _, _, _ := cpuid(0, 0)
	if max < 7 {
		return false
	}
	_, _, c1, _ := cpuid(1, 0)
	if c1&(1<<27) == 0 { // OSXSAVE
		return false
	}
	if xgetbv0()&0xe6 != 0xe6 {
		return false
	}
	_, b7, _, _ := cpuid(7, 0)
	return b7&(1<<16) != 0
}

// Available reports whether the kernels run on this machine.
var Available = hasAVX512()

// SiLU: y[i] = x[i]/(1+exp(−x[i])) for len(x) elements (y at least as long), every
// element through the 16-lane kernel (a tail shorter than 16 goes through a
// zero-padded block), so that a result never depends on where a parallel range
// starts. It panics when !Available.
func SiLU(x, y []float32) {
	if !Available {
		panic("vec.SiLU: no AVX-512")
	}
	n := len(x) &^ 15
	y = y[:len(x)]
	if n > 0 {
		siluAVX512(&x[0], &y[0], n)
	}
	if t := len(x) - n; t > 0 {
		var bx, by [16]float32
		copy(bx[:], x[n:])
		siluAVX512(&bx[0], &by[0], 16)
		copy(y[n:], by[:t])
	}
}

// SiLUBackward: dx[i] += dy[i]·s·(1 + x[i]·(1−s)) with s = 1/(1+exp(−x[i])), as SiLU.
func SiLUBackward(x, dy, dx []float32) {
	if !Available {
		panic("vec.SiLUBackward: no AVX-512")
	}
	n := len(x) &^ 15
	dy, dx = dy[:len(x)], dx[:len(x)]
	if n > 0 {
		siluBwdAVX512(&x[0], &dy[0], &dx[0], n)
	}
	if t := len(x) - n; t > 0 {
		var bx, bdy, bdx [16]float32
		copy(bx[:], x[n:])
		copy(bdy[:], dy[n:])
		copy(bdx[:], dx[n:])
		siluBwdAVX512(&bx[0], &bdy[0], &bdx[0], 16)
		copy(dx[n:], bdx[:t])
	}
}

// Add: dst[i] += src[i] for i < len(dst) (src at least as long). Each sum is one IEEE
// addition, the same in a vector lane as in scalar code. It panics when !Available.
func Add(dst, src []float32) {
	if !Available {
		panic("vec.Add: no AVX-512")
	}
	src = src[:len(dst)]
	n := len(dst) &^ 63
	if n > 0 {
		addAVX512(&dst[0], &src[0], n)
	}
	for i := n; i < len(dst); i++ {
		dst[i] += src[i]
	}
}

// BF16 reports the CPU's bfloat16 dot-product instructions that the OS lets programs use: AVX512-BF16 (CPUID.7.1
// EAX bit 5, with the ZMM state saved) and AMX-BF16 (CPUID.7.0 EDX bits 22 (AMX-BF16) and 24 (AMX-TILE), with the
// tile state enabled in XCR0, bits 17 and 18). Package cpu's bf16 precision needs one of them.
func BF16() (avx512bf16, amxbf16 bool) {
	max, _, _, _ := cpuid(0, 0)
	if max < 7 {
		return false, false
	}
	_, _, c1, _ := cpuid(1, 0)
	if c1&(1<<27) == 0 { // OSXSAVE
		return false, false
	}
	xcr0 := xgetbv0()
	sub, _, _, d7 := cpuid(7, 0)
	if sub >= 1 && hasAVX512() {
		a71, _, _, _ := cpuid(7, 1)
		avx512bf16 = a71&(1<<5) != 0
	}
	amxbf16 = d7&(1<<22) != 0 && d7&(1<<24) != 0 && xcr0&(3<<17) == 3<<17
	return avx512bf16, amxbf16
}

//go:noescape
func sum64AVX512(x *float32, n int, p *[32]float64)

//go:noescape
func sumSqDev64AVX512(x *float32, n int, mu float64, p *[32]float64, w *float32)

//go:noescape
func sumDyDyXhatAVX512(dy, x *float32, n int, mu, rstd float64, p *[64]float64, w *float32)

//go:noescape
func affineAVX512(x, y *float32, n int, m, a, b float32, pf *float32)

//go:noescape
func gnDxAVX512(dy, x, dx *float32, n int, mu, rstd, gc, m1, m2 float64, pf1, pf2 *float32, set bool)

// Group norm's kernels. The scalar loops of package cpu convert every float32 to
// float64 and keep four partial sums, about one element per cycle; these take 8
// float64 lanes per instruction and 32 partial sums, so that the conversions, not the
// latency of the additions, bound them.
//
// Order of the float64 sums (Sum64, SumSqDev64, SumDyDyXhat): element i goes to partial
// i mod 32, each partial adding its elements in increasing i from +0, and the 32
// partials combine as combine32 says. A tail shorter than 32 continues the same
// partials in scalar Go with the same operations (math.FMA where the kernel fuses), so
// a sum depends on the data alone: not on the thread count, the run, or where a slice
// starts.

// combine32 is the sum of the partials p[0..32): q[l] = (p[l]+p[8+l]) + (p[16+l]+p[24+l])
// for the 8 lanes l, then ((q0+q4) + (q2+q6)) + ((q1+q5) + (q3+q7)).
func combine32(p *[32]float64) float64 {
	var q [8]float64
	for l := range q {
		q[l] = (p[l] + p[8+l]) + (p[16+l] + p[24+l])
	}
	return ((q[0] + q[4]) + (q[2] + q[6])) + ((q[1] + q[5]) + (q[3] + q[7]))
}

// Sum64 is Σ x[i] in float64, in the order above. It panics when !Available.
func Sum64(x []float32) float64 {
	if !Available {
		panic("vec.Sum64: no AVX-512")
	}
	var p [32]float64
	n := len(x) &^ 31
	if n > 0 {
		sum64AVX512(&x[0], n, &p)
	}
	for i := n; i < len(x); i++ {
		p[i-n] += float64(x[i])
	}
	return combine32(&p)
}

// SumSqDev64 is Σ (x[i] − mu)² in float64, each square added by one fused
// multiply-add, in the order above. Meanwhile it prefetches w (nil, or at least as long
// as x: the output the caller writes next) into L1 with PREFETCHT0, two lines per 32
// elements, so that the stores of the next pass find their lines (a line no other core
// holds arrives exclusive). This pays where the next pass is short (GroupNorm's
// normalisation: about a quarter off its time at the celeba32 shapes) and not where it
// computes long enough to hide its own misses (AffineSiLU). It panics when !Available.
func SumSqDev64(x []float32, mu float64, w []float32) float64 {
	if !Available {
		panic("vec.SumSqDev64: no AVX-512")
	}
	var p [32]float64
	n := len(x) &^ 31
	if n > 0 {
		sumSqDev64AVX512(&x[0], n, mu, &p, warm(w, x, n))
	}
	for i := n; i < len(x); i++ {
		d := float64(x[i]) - mu
		p[i-n] = math.FMA(d, d, p[i-n])
	}
	return combine32(&p)
}

// SumDyDyXhat is (Σ dy[i], Σ dy[i]·x̂[i]) in float64 with x̂[i] = (x[i] − mu)·rstd, each
// product added by one fused multiply-add, in the order above (x at least as long as
// dy). Meanwhile it prefetches w, as SumSqDev64. It panics when !Available.
func SumDyDyXhat(dy, x []float32, mu, rstd float64, w []float32) (float64, float64) {
	if !Available {
		panic("vec.SumDyDyXhat: no AVX-512")
	}
	var p [64]float64
	x = x[:len(dy)]
	n := len(dy) &^ 31
	if n > 0 {
		sumDyDyXhatAVX512(&dy[0], &x[0], n, mu, rstd, &p, warm(w, dy, n))
	}
	for i := n; i < len(dy); i++ {
		d := float64(dy[i])
		p[i-n] += d
		p[32+i-n] = math.FMA(d, (float64(x[i])-mu)*rstd, p[32+i-n])
	}
	return combine32((*[32]float64)(p[:32])), combine32((*[32]float64)(p[32:]))
}

// Affine: y[i] = ((x[i] − m)·a) + b for i < len(x) (y at least as long), each
// operation rounded to float32 (no FMA), as the scalar loop compiled without FMA.
// Every element goes through the 16-lane kernel (a tail through a padded block).
// Meanwhile it prefetches pf into L2 (nil, or at least as long as x: the data of the
// next group, which the caller reads next; see package cpu's groupnorm_vec.go). It
// panics when !Available.
func Affine(x, y []float32, m, a, b float32, pf []float32) {
	if !Available {
		panic("vec.Affine: no AVX-512")
	}
	affineRun(false, x, y, m, a, b, pf)
}

// GroupNormDx: dx[i] += float32(rstd·((dy[i]·gc − m1) − x̂·m2)) with x̂ = (x[i] − mu)·rstd,
// in float64 without FMA (the scalar loop of group norm's backward, operation for
// operation), for i < len(dy) (x and dx at least as long). Every element goes through
// the kernel (a tail through a padded block). Meanwhile it prefetches pf1 and pf2 into
// L2 as Affine. set: dx[i] = … instead of += (dx need not hold zeros). It panics when !Available.
func GroupNormDx(dy, x, dx []float32, mu, rstd, gc, m1, m2 float64, pf1, pf2 []float32, set bool) {
	if !Available {
		panic("vec.GroupNormDx: no AVX-512")
	}
	n := len(dy) &^ 15
	x, dx = x[:len(dy)], dx[:len(dy)]
	if n > 0 {
		gnDxAVX512(&dy[0], &x[0], &dx[0], n, mu, rstd, gc, m1, m2, warm(pf1, x, n), warm(pf2, dy, n), set)
	}
	if t := len(dy) - n; t > 0 {
		var bdy, bx, bdx [16]float32
		copy(bdy[:], dy[n:])
		copy(bx[:], x[n:])
		copy(bdx[:], dx[n:])
		gnDxAVX512(&bdy[0], &bx[0], &bdx[0], 16, mu, rstd, gc, m1, m2, &bx[0], &bdy[0], set)
		copy(dx[n:], bdx[:t])
	}
}

//go:noescape
func gnSiLUGradAVX512(x, dy, gn *float32, n int, m, a, b float32, mu, rstd float64, p *[64]float64, w *float32)

// GroupNormSiLUGrad is, in one pass, Affine(x, nv, m, a, b), SiLUBackward(nv, dy, gn)
// into gn cleared to zeros, and SumDyDyXhat(gn, x, mu, rstd), whose two sums it
// returns: the gradient at the input of the SiLU that follows a group norm and that
// gradient's sums for the norm's backward, bit for bit as those three calls (x and dy
// at least as long as gn). Meanwhile it prefetches w, as SumSqDev64 (GroupNormSiLUBackward:
// dx, for the dx pass that follows). It panics when !Available.
func GroupNormSiLUGrad(x, dy, gn []float32, m, a, b float32, mu, rstd float64, w []float32) (float64, float64) {
	if !Available {
		panic("vec.GroupNormSiLUGrad: no AVX-512")
	}
	var p [64]float64
	x, dy = x[:len(gn)], dy[:len(gn)]
	n := len(gn) &^ 31
	if n > 0 {
		gnSiLUGradAVX512(&x[0], &dy[0], &gn[0], n, m, a, b, mu, rstd, &p, warm(w, gn, n))
	}
	if n < len(gn) {
		tx, tdy, tg := x[n:], dy[n:], gn[n:]
		var nv [32]float32
		Affine(tx, nv[:], m, a, b, nil)
		clear(tg)
		SiLUBackward(nv[:len(tg)], tdy, tg)
		for i, g := range tg {
			d := float64(g)
			p[i] += d
			p[32+i] = math.FMA(d, (float64(tx[i])-mu)*rstd, p[32+i])
		}
	}
	return combine32((*[32]float64)(p[:32])), combine32((*[32]float64)(p[32:]))
}

// warm is the address a kernel prefetches n elements from: w's, or x's (in cache
// already) when w is nil. It panics when w is shorter than n.
func warm(w, x []float32, n int) *float32 {
	if w == nil {
		return &x[0]
	}
	return &w[:n][0]
}

//go:noescape
func affineSiLUAVX512(x, y *float32, n int, m, a, b float32, pf *float32)

// AffineSiLU is Affine(x, y, m, a, b) followed by SiLU(y, y) in one pass, bit for bit as
// those two calls: a group norm's normalisation and the SiLU after it. It panics when
// !Available. Meanwhile it prefetches pf into L2 as Affine.
func AffineSiLU(x, y []float32, m, a, b float32, pf []float32) {
	if !Available {
		panic("vec.AffineSiLU: no AVX-512")
	}
	affineRun(true, x, y, m, a, b, pf)
}

// affineRun runs affineAVX512 (affineSiLUAVX512 where silu) over x into y: the multiple of 16 in place, a tail
// through a padded block. A switch, not a func value: through a func value the padded blocks would escape to the heap.
func affineRun(silu bool, x, y []float32, m, a, b float32, pf []float32) {
	n := len(x) &^ 15
	y = y[:len(x)]
	if n > 0 {
		if silu {
			affineSiLUAVX512(&x[0], &y[0], n, m, a, b, warm(pf, x, n))
		} else {
			affineAVX512(&x[0], &y[0], n, m, a, b, warm(pf, x, n))
		}
	}
	if t := len(x) - n; t > 0 {
		var bx, by [16]float32
		copy(bx[:], x[n:])
		if silu {
			affineSiLUAVX512(&bx[0], &by[0], 16, m, a, b, &bx[0])
		} else {
			affineAVX512(&bx[0], &by[0], 16, m, a, b, &bx[0])
		}
		copy(y[n:], by[:t])
	}
}
