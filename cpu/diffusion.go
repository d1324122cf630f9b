package cpu

import (
	"fmt"
	"math"

	"github.com/ddpmgo/ddpm/ops"
	"github.com/ddpmgo/ddpm/rng"
)

// rngChunk is the stack buffer of draws that Normal (float64) and Dropout fill at a time.
const rngChunk = 1024

// Normal: y[i] = rng.Normal(seed, stream, offset+i), the float32 draw converted to T.
func (be *Backend[T]) Normal(seed uint64, stream uint32, offset uint64, y ops.Buf) {
	ys := be.buf("Normal", "y", y)
	if f, ok := any(ys).([]float32); ok {
		rng.FillNormal(f, seed, stream, offset)
		return
	}
	be.parallel(len(ys), func(lo, hi int) {
		var tmp [rngChunk]float32
		for i := lo; i < hi; i += rngChunk {
			d := tmp[:min(rngChunk, hi-i)]
			rng.FillNormal(d, seed, stream, offset+uint64(i))
			for j, v := range d {
				ys[i+j] = T(v)
			}
		}
	})
}

// Dropout: y[i] = x[i]/(1−rate) where rng.Uniform(seed, rng.StreamDropout, offset+i) ≥ rate
// (the comparison in float32), else 0. rate must lie in [0, 1).
func (be *Backend[T]) Dropout(rate float32, seed, offset uint64, x, y ops.Buf) {
	s := be.same("Dropout", "x, y", x, y)
	be.dropout("Dropout", rate, seed, offset, s[0], s[1], false)
}

// DropoutBackward: dx[i] += dy[i]/(1−rate) where the forward kept element i.
func (be *Backend[T]) DropoutBackward(rate float32, seed, offset uint64, dy, dx ops.Buf) {
	s := be.same("DropoutBackward", "dy, dx", dy, dx)
	be.dropout("DropoutBackward", rate, seed, offset, s[0], s[1], true)
}

func (be *Backend[T]) dropout(op string, rate float32, seed, offset uint64, src, dst []T, acc bool) {
	if !(rate >= 0 && rate < 1) {
		panic(fmt.Sprintf("cpu %s: rate %v outside [0, 1)", op, rate))
	}
	keep := T(1 / (1 - float64(rate)))
	be.parallel(len(src), func(lo, hi int) {
		var u [rngChunk]float32
		for i := lo; i < hi; i += rngChunk {
			d := u[:min(rngChunk, hi-i)]
			rng.FillUniform(d, seed, rng.StreamDropout, offset+uint64(i))
			for j, uj := range d {
				var v T
				if uj >= rate {
					v = src[i+j] * keep
				}
				if acc {
					dst[i+j] += v
				} else {
					dst[i+j] = v
				}
			}
		}
	})
}

type diffShape struct{ N, D, T int }

// timesteps converts t into table indices int(t[s]), panicking outside [0, T).
func (be *Backend[T]) timesteps(op string, sh diffShape, t ops.Buf, idx func(s, i int)) {
	ts := be.arg(op, sh, "t", t, sh.N)
	for s, v := range ts {
		i := int(v)
		if v < 0 || i >= sh.T {
			panic(fmt.Sprintf("cpu %s %+v: t[%d] = %v outside [0, %d)", op, sh, s, v, sh.T))
		}
		idx(s, i)
	}
}

// table unwraps a schedule table of sch.T entries.
func (be *Backend[T]) table(op string, sh diffShape, name string, b ops.Buf) []T {
	return be.arg(op, sh, "schedule."+name, b, sh.T)
}

// QSample: xt = √ᾱ_t·x0 + √(1−ᾱ_t)·eps per sample, with t = int(t[s]) indexing the tables.
func (be *Backend[T]) QSample(sch *ops.Schedule, n, d int, t, x0, eps, xt ops.Buf) {
	sh := diffShape{n, d, sch.T}
	sa := be.table("QSample", sh, "SqrtAlphaBar", sch.SqrtAlphaBar)
	sb := be.table("QSample", sh, "SqrtOneMinusAlphaBar", sch.SqrtOneMinusAlphaBar)
	x0s := be.arg("QSample", sh, "x0", x0, n*d)
	es := be.arg("QSample", sh, "eps", eps, n*d)
	xts := be.arg("QSample", sh, "xt", xt, n*d)
	be.timesteps("QSample", sh, t, func(s, i int) {
		a, b := sa[i], sb[i]
		for j := s * d; j < (s+1)*d; j++ {
			xts[j] = a*x0s[j] + b*es[j]
		}
	})
}

// Posterior is the fused DDPM reverse step, per sample with t = int(t[s]), in float64:
//
//	x̂0 = √(1/ᾱ_t)·x_t − √(1/ᾱ_t − 1)·ε̂;  x̂0 = clip(x̂0, −1, 1) if clip
//	out = c1(t)·x̂0 + c2(t)·x_t + σ_t·z   (the σ_t·z term left out where t = 0)
func (be *Backend[T]) Posterior(sch *ops.Schedule, n, d int, clip bool, t, xt, epsHat, z, out ops.Buf) {
	sh := diffShape{n, d, sch.T}
	ra := be.table("Posterior", sh, "SqrtRecipAlphaBar", sch.SqrtRecipAlphaBar)
	rm := be.table("Posterior", sh, "SqrtRecipM1AlphaBar", sch.SqrtRecipM1AlphaBar)
	c1s := be.table("Posterior", sh, "PosteriorCoef1", sch.PosteriorCoef1)
	c2s := be.table("Posterior", sh, "PosteriorCoef2", sch.PosteriorCoef2)
	sgs := be.table("Posterior", sh, "Sigma", sch.Sigma)
	xts := be.arg("Posterior", sh, "xt", xt, n*d)
	es := be.arg("Posterior", sh, "epsHat", epsHat, n*d)
	zs := be.arg("Posterior", sh, "z", z, n*d)
	os := be.arg("Posterior", sh, "out", out, n*d)
	be.timesteps("Posterior", sh, t, func(s, i int) {
		a, b := float64(ra[i]), float64(rm[i])
		c1, c2, sg := float64(c1s[i]), float64(c2s[i]), float64(sgs[i])
		for j := s * d; j < (s+1)*d; j++ {
			x := float64(xts[j])
			x0 := a*x - b*float64(es[j])
			if clip {
				x0 = max(-1, min(1, x0))
			}
			mu := c1*x0 + c2*x
			if i > 0 {
				mu += sg * float64(zs[j])
			}
			os[j] = T(mu)
		}
	})
}

// DDIMStep, in float64, with ᾱ = alphaBar and ᾱp = alphaBarPrev:
//
//	x̂0 = √(1/ᾱ)·x_t − √(1/ᾱ − 1)·ε̂;  if clip: x̂0 = clip(x̂0, −1, 1), ε̂ = (x_t − √ᾱ·x̂0)/√(1−ᾱ)
//	σ = η·√((1−ᾱp)/(1−ᾱ))·√(1−ᾱ/ᾱp)
//	out = √ᾱp·x̂0 + √(1−ᾱp−σ²)·ε̂ + σ·z   (a negative 1−ᾱp−σ² from rounding counts as 0)
func (be *Backend[T]) DDIMStep(alphaBar, alphaBarPrev, eta float32, clip bool, xt, epsHat, z, out ops.Buf) {
	s := be.same("DDIMStep", "xt, epsHat, z, out", xt, epsHat, z, out)
	xts, es, zs, os := s[0], s[1], s[2], s[3]
	ab, abp := float64(alphaBar), float64(alphaBarPrev)
	if !(ab > 0 && ab < 1) || !(abp >= ab && abp <= 1) || eta < 0 {
		panic(fmt.Sprintf("cpu DDIMStep: need 0 < alphaBar (%v) < 1, alphaBar ≤ alphaBarPrev (%v) ≤ 1, eta (%v) ≥ 0", alphaBar, alphaBarPrev, eta))
	}
	ra, rm := math.Sqrt(1/ab), math.Sqrt(1/ab-1)
	sab, s1ab := math.Sqrt(ab), math.Sqrt(1-ab)
	sigma := float64(eta) * math.Sqrt((1-abp)/(1-ab)) * math.Sqrt(1-ab/abp)
	dir := math.Sqrt(max(0, 1-abp-sigma*sigma))
	sabp := math.Sqrt(abp)
	be.parallel(len(xts), func(lo, hi int) {
		for j := lo; j < hi; j++ {
			x, e := float64(xts[j]), float64(es[j])
			x0 := ra*x - rm*e
			if clip {
				x0 = max(-1, min(1, x0))
				e = (x - sab*x0) / s1ab
			}
			os[j] = T(sabp*x0 + dir*e + sigma*float64(zs[j]))
		}
	})
}
