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
	defer be.stop(FamOther, be.start())
	ys := be.buf("Normal", "y", y)
	if f, ok := any(ys).([]float32); ok {
		rng.FillNormal(f, seed, stream, offset)
		return
	}
	j := be.newJob(jNormal64)
	j.a[0], j.u[0], j.u[1], j.m[0] = ys, seed, offset, int(stream)
	be.parallel(j, len(ys))
}

func normalRange[T Float](j *job[T], lo, hi int) {
	ys, seed, offset, stream := j.a[0], j.u[0], j.u[1], uint32(j.m[0])
	var tmp [rngChunk]float32
	for i := lo; i < hi; i += rngChunk {
		d := tmp[:min(rngChunk, hi-i)]
		rng.FillNormal(d, seed, stream, offset+uint64(i))
		for k, v := range d {
			ys[i+k] = T(v)
		}
	}
}

// Timesteps: t[i] = rng.Intn(seed, stream, offset+i, T) as float values (see ops.Backend).
func (be *Backend[T]) Timesteps(seed uint64, stream uint32, offset uint64, steps int, t ops.Buf) {
	defer be.stop(FamOther, be.start())
	ts := be.buf("Timesteps", "t", t)
	if steps < 1 {
		panic(fmt.Sprintf("cpu Timesteps: T = %d", steps))
	}
	for i := range ts {
		ts[i] = T(rng.Intn(seed, stream, offset+uint64(i), steps))
	}
}

// Dropout: y[i] = x[i]/(1−rate) where rng.Uniform(seed, rng.StreamDropout, offset+i) ≥ rate
// (the comparison in float32), else 0. rate must lie in [0, 1).
func (be *Backend[T]) Dropout(rate float32, seed, offset uint64, x, y ops.Buf) {
	defer be.stop(FamOther, be.start())
	s := be.same("Dropout", "x, y", x, y)
	be.dropout("Dropout", rate, seed, offset, s[0], s[1], false)
}

// DropoutBackward: dx[i] += dy[i]/(1−rate) where the forward kept element i.
func (be *Backend[T]) DropoutBackward(rate float32, seed, offset uint64, dy, dx ops.Buf) {
	defer be.stop(FamOther, be.start())
	s := be.same("DropoutBackward", "dy, dx", dy, dx)
	be.dropout("DropoutBackward", rate, seed, offset, s[0], s[1], true)
}

func (be *Backend[T]) dropout(op string, rate float32, seed, offset uint64, src, dst []T, acc bool) {
	if !(rate >= 0 && rate < 1) {
		panic(fmt.Sprintf("cpu %s: rate %v outside [0, 1)", op, rate))
	}
	j := be.newJob(jDropout)
	j.a[0], j.a[1], j.f, j.u[0], j.u[1], j.flag = src, dst, rate, seed, offset, acc
	j.c[0] = T(1 / (1 - float64(rate)))
	be.parallel(j, len(src))
}

func dropoutRange[T Float](j *job[T], lo, hi int) {
	src, dst, rate, seed, offset, acc, keep := j.a[0], j.a[1], j.f, j.u[0], j.u[1], j.flag, j.c[0]
	var u [rngChunk]float32
	for i := lo; i < hi; i += rngChunk {
		d := u[:min(rngChunk, hi-i)]
		rng.FillUniform(d, seed, rng.StreamDropout, offset+uint64(i))
		for k, uk := range d {
			var v T
			if uk >= rate {
				v = src[i+k] * keep
			}
			if acc {
				dst[i+k] += v
			} else {
				dst[i+k] = v
			}
		}
	}
}

type diffShape struct{ N, D, T int }

// timesteps converts t into table indices int(t[s]), panicking outside [0, T).
func (be *Backend[T]) timesteps(op string, sh diffShape, t ops.Buf, idx func(s, i int)) {
	ts := arg(be, op, sh, "t", t, sh.N)
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
	return arg(be, op, sh, "schedule."+name, b, sh.T)
}

// QSample: xt = √ᾱ_t·x0 + √(1−ᾱ_t)·eps per sample, with t = int(t[s]) indexing the tables.
func (be *Backend[T]) QSample(sch *ops.Schedule, n, d int, t, x0, eps, xt ops.Buf) {
	defer be.stop(FamOther, be.start())
	sh := diffShape{n, d, sch.T}
	sa := be.table("QSample", sh, "SqrtAlphaBar", sch.SqrtAlphaBar)
	sb := be.table("QSample", sh, "SqrtOneMinusAlphaBar", sch.SqrtOneMinusAlphaBar)
	x0s := arg(be, "QSample", sh, "x0", x0, n*d)
	es := arg(be, "QSample", sh, "eps", eps, n*d)
	xts := arg(be, "QSample", sh, "xt", xt, n*d)
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
	defer be.stop(FamOther, be.start())
	sh := diffShape{n, d, sch.T}
	ra := be.table("Posterior", sh, "SqrtRecipAlphaBar", sch.SqrtRecipAlphaBar)
	rm := be.table("Posterior", sh, "SqrtRecipM1AlphaBar", sch.SqrtRecipM1AlphaBar)
	c1s := be.table("Posterior", sh, "PosteriorCoef1", sch.PosteriorCoef1)
	c2s := be.table("Posterior", sh, "PosteriorCoef2", sch.PosteriorCoef2)
	sgs := be.table("Posterior", sh, "Sigma", sch.Sigma)
	xts := arg(be, "Posterior", sh, "xt", xt, n*d)
	es := arg(be, "Posterior", sh, "epsHat", epsHat, n*d)
	zs := arg(be, "Posterior", sh, "z", z, n*d)
	os := arg(be, "Posterior", sh, "out", out, n*d)
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
	defer be.stop(FamOther, be.start())
	s := be.same("DDIMStep", "xt, epsHat, z, out", xt, epsHat, z, out)
	ab, abp := float64(alphaBar), float64(alphaBarPrev)
	if !(ab > 0 && ab < 1) || !(abp >= ab && abp <= 1) || eta < 0 {
		panic(fmt.Sprintf("cpu DDIMStep: need 0 < alphaBar (%v) < 1, alphaBar ≤ alphaBarPrev (%v) ≤ 1, eta (%v) ≥ 0", alphaBar, alphaBarPrev, eta))
	}
	j := be.newJob(jDDIM)
	j.a[0], j.a[1], j.a[2], j.a[3], j.flag = s[0], s[1], s[2], s[3], clip
	sigma := float64(eta) * math.Sqrt((1-abp)/(1-ab)) * math.Sqrt(1-ab/abp)
	j.d[0], j.d[1] = math.Sqrt(1/ab), math.Sqrt(1/ab-1)
	j.d[2], j.d[3] = math.Sqrt(ab), math.Sqrt(1-ab)
	j.d[4], j.d[5], j.d[6] = sigma, math.Sqrt(max(0, 1-abp-sigma*sigma)), math.Sqrt(abp)
	be.parallel(j, len(s[0]))
}

func ddimRange[T Float](j *job[T], lo, hi int) {
	xts, es, zs, os, clip := j.a[0], j.a[1], j.a[2], j.a[3], j.flag
	ra, rm, sab, s1ab, sigma, dir, sabp := j.d[0], j.d[1], j.d[2], j.d[3], j.d[4], j.d[5], j.d[6]
	for k := lo; k < hi; k++ {
		x, e := float64(xts[k]), float64(es[k])
		x0 := ra*x - rm*e
		if clip {
			x0 = max(-1, min(1, x0))
			e = (x - sab*x0) / s1ab
		}
		os[k] = T(sabp*x0 + dir*e + sigma*float64(zs[k]))
	}
}
