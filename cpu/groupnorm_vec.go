package cpu

import "github.com/ddpmgo/ddpm/cpu/internal/vec"

// useAVX512GroupNorm selects group norm's AVX-512 kernels of package vec on the float32
// backend where the CPU has AVX-512F; tests switch it off to compare with the scalar
// loops below, which the float64 backend always runs.
//
// What changes with it: the order of the float64 sums (32 partial sums, element i in
// partial i mod 32, instead of 4, and a fused multiply-add for each square and each
// dy·x̂; see package vec), so μ, σ², Σ dy and Σ dy·x̂ differ from the scalar loop's in
// the last bits of a float64 and the float32 results by at most a few ulps. The order
// is fixed as before: results stay the same run to run and for any worker count. The
// elementwise loops (y = (x − μ)·a + b in float32; dx in float64) are the scalar ones
// operation for operation, without FMA.
var useAVX512GroupNorm = vec.Available

// fastSum64 is Σ v[i] in float64: vec.Sum64's order on the float32 backend with AVX-512,
// sum64's otherwise. Group norm's statistics and the convolutions' bias gradients (convBiasItem) use it.
func fastSum64[T Float](v []T) float64 {
	if v32, ok := any(v).([]float32); ok && useAVX512GroupNorm {
		return vec.Sum64(v32)
	}
	return sum64(v)
}

// gnSumSqDev64 is Σ (v[i] − mu)² in float64 (vec.SumSqDev64 or sumSqDev64, as fastSum64).
// The vector kernel prefetches w (the output that the caller writes next: nil, or at
// least as long as v) meanwhile, so that the writes find their lines in cache.
func gnSumSqDev64[T Float](v []T, mu float64, w []T) float64 {
	if v32, ok := any(v).([]float32); ok && useAVX512GroupNorm {
		return vec.SumSqDev64(v32, mu, any(w).([]float32))
	}
	return sumSqDev64(v, mu)
}

// gnSumDyDyXhat is (Σ dy[i], Σ dy[i]·x̂[i]) with x̂[i] = (x[i] − mu)·rstd
// (vec.SumDyDyXhat or sumDyDyXhat, as fastSum64), prefetching w as gnSumSqDev64.
func gnSumDyDyXhat[T Float](dy, x []T, mu, rstd float64, w []T) (float64, float64) {
	if dy32, ok := any(dy).([]float32); ok && useAVX512GroupNorm {
		return vec.SumDyDyXhat(dy32, any(x).([]float32), mu, rstd, any(w).([]float32))
	}
	return sumDyDyXhat(dy, x, mu, rstd)
}

// gnAffine is the normalisation of one channel: dst[i] = (src[i] − m)·a + b in T.
// GroupNorm, GroupNormSiLU and GroupNormSiLUBackward's recomputation all call it, so
// that they agree bit for bit on either path.
// The vector kernel prefetches pf into L2 meanwhile (nil, or at least as long as src).
func gnAffine[T Float](src, dst []T, m, a, b T, pf []T) {
	if s32, ok := any(src).([]float32); ok && useAVX512GroupNorm {
		vec.Affine(s32, any(dst).([]float32), any(m).(float32), any(a).(float32), any(b).(float32), any(pf).([]float32))
		return
	}
	dst = dst[:len(src)]
	for i, v := range src {
		dst[i] = (v-m)*a + b
	}
}

// gnDx is group norm's dx over one channel: dx[i] += T(rstd·(dy[i]·gc − m1 − x̂·m2)) with
// x̂ = (x[i] − mu)·rstd, in float64 (set: dx[i] = …, for a dx that waited to be zeroed: fills.go). The vector
// kernel prefetches pf1 and pf2 into L2 meanwhile (as gnAffine).
func gnDx[T Float](dy, x, dx []T, mu, rstd, gc, m1, m2 float64, pf1, pf2 []T, set bool) {
	if dy32, ok := any(dy).([]float32); ok && useAVX512GroupNorm {
		vec.GroupNormDx(dy32, any(x).([]float32), any(dx).([]float32), mu, rstd, gc, m1, m2,
			any(pf1).([]float32), any(pf2).([]float32), set)
		return
	}
	x, dx = x[:len(dy)], dx[:len(dy)]
	for i := range dy {
		xh := (float64(x[i]) - mu) * rstd
		v := T(rstd * (float64(dy[i])*gc - m1 - xh*m2))
		if set {
			dx[i] = v
		} else {
			dx[i] += v
		}
	}
}

// gnAffineSiLU is gnAffine followed by SiLU's loop in place (siluInPlace). With AVX-512
// for both, vec.AffineSiLU does the same in one pass (bit for bit).
func gnAffineSiLU[T Float](src, dst []T, m, a, b T, pf []T) {
	if s32, ok := any(src).([]float32); ok && useAVX512GroupNorm && useAVX512 {
		vec.AffineSiLU(s32, any(dst).([]float32), any(m).(float32), any(a).(float32), any(b).(float32), any(pf).([]float32))
		return
	}
	gnAffine(src, dst, m, a, b, pf)
	siluInPlace(dst[:len(src)])
}

// gnSiLUGrad writes gn = SiLU'(n)·dy with n = (x − m)·a + b (gnAffine into the scratch nv,
// then SiLUBackward's loop into gn cleared to zeros) and returns gnSumDyDyXhat(gn, x, mu,
// rstd, w): GroupNormSiLUBackward's recomputation for one channel. With AVX-512 for both
// group norm and SiLU, vec.GroupNormSiLUGrad does the same in one pass (bit for bit; nv
// unused), prefetching w.
func gnSiLUGrad[T Float](x, dy, nv, gn []T, m, a, b T, mu, rstd float64, w []T) (float64, float64) {
	if x32, ok := any(x).([]float32); ok && useAVX512GroupNorm && useAVX512 {
		return vec.GroupNormSiLUGrad(x32, any(dy).([]float32), any(gn).([]float32),
			any(m).(float32), any(a).(float32), any(b).(float32), mu, rstd, any(w).([]float32))
	}
	gnAffine(x, nv, m, a, b, nil)
	clear(gn)
	siluBwdSlice(nv, dy, gn)
	return gnSumDyDyXhat(gn, x, mu, rstd, w)
}
