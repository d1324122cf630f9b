package cpu

import (
	"fmt"
	"math"

	"github.com/ddpmgo/ddpm/ops"
)

func checkNorm(op string, s ops.NormShape) {
	if s.N < 0 || s.C < 1 || s.HW < 1 || s.G < 1 || s.C%s.G != 0 || s.Eps < 0 {
		panic(fmt.Sprintf("cpu %s %+v: invalid shape (C must be a positive multiple of G)", op, s))
	}
}

// GroupNorm (ops.Backend.GroupNorm): per (n, g), over the M = (C/G)·HW elements of channels [g·C/G, (g+1)·C/G),
// μ and σ² in two passes in float64 with four partial sums (see sum64). (n, g) pairs run in parallel.
func (be *Backend[T]) GroupNorm(s ops.NormShape, x, gamma, beta, y, stats ops.Buf) {
	defer be.stop(FamGroupNorm, be.start())
	checkNorm("GroupNorm", s)
	xs := arg(be, "GroupNorm", s, "x", x, s.N*s.C*s.HW)
	gs := arg(be, "GroupNorm", s, "gamma", gamma, s.C)
	bs := arg(be, "GroupNorm", s, "beta", beta, s.C)
	ys := arg(be, "GroupNorm", s, "y", y, s.N*s.C*s.HW)
	st := arg(be, "GroupNorm", s, "stats", stats, 2*s.N*s.G)
	j := be.newJob(jGroupNorm)
	j.norm = s
	j.a[0], j.a[1], j.a[2], j.a[3], j.a[4] = xs, gs, bs, ys, st
	be.forEach(j, s.N*s.G)
}

// groupNormItem normalises group ng = n·G + g.
func groupNormItem[T Float](j *job[T], ng int) {
	s, xs, gs, bs, ys, st := j.norm, j.a[0], j.a[1], j.a[2], j.a[3], j.a[4]
	cpg := s.C / s.G
	m := cpg * s.HW
	{
		seg := xs[ng*m : (ng+1)*m]
		mu := sum64(seg) / float64(m)
		ss := sumSqDev64(seg, mu)
		rstd := 1 / math.Sqrt(ss/float64(m)+float64(s.Eps))
		st[2*ng], st[2*ng+1] = T(mu), T(rstd)
		tm, tr := T(mu), T(rstd)
		c0 := (ng % s.G) * cpg
		out := ys[ng*m : (ng+1)*m]
		for cc := 0; cc < cpg; cc++ {
			a, b := tr*gs[c0+cc], bs[c0+cc]
			src, dst := seg[cc*s.HW:(cc+1)*s.HW], out[cc*s.HW:(cc+1)*s.HW]
			for i, v := range src {
				dst[i] = (v-tm)*a + b
			}
		}
	}
}

// GroupNormBackward accumulates, with x̂ = (x−μ)·rstd and g = dy·gamma[c] per element,
//
//	dx     += rstd·(g − mean_group(g) − x̂·mean_group(g·x̂))
//	dgamma[c] += Σ_{n,i} dy·x̂,  dbeta[c] += Σ_{n,i} dy
//
// The sums run in float64; the batch sums of dgamma and dbeta go through per-(n, c)
// partials added in n order, so they do not depend on the parallel split. Any of dx,
// dgamma, dbeta may be nil.
func (be *Backend[T]) GroupNormBackward(s ops.NormShape, x, gamma, stats, dy, dx, dgamma, dbeta ops.Buf) {
	defer be.stop(FamGroupNorm, be.start())
	checkNorm("GroupNormBackward", s)
	xs := arg(be, "GroupNormBackward", s, "x", x, s.N*s.C*s.HW)
	gs := arg(be, "GroupNormBackward", s, "gamma", gamma, s.C)
	st := arg(be, "GroupNormBackward", s, "stats", stats, 2*s.N*s.G)
	dys := arg(be, "GroupNormBackward", s, "dy", dy, s.N*s.C*s.HW)
	dxs := opt(be, "GroupNormBackward", s, "dx", dx, s.N*s.C*s.HW)
	dgs := opt(be, "GroupNormBackward", s, "dgamma", dgamma, s.C)
	dbs := opt(be, "GroupNormBackward", s, "dbeta", dbeta, s.C)
	be.sums = grow(be.sums, 2*s.N*s.C)
	sdy, sdyx := be.sums[:s.N*s.C], be.sums[s.N*s.C:]
	j := be.newJob(jGroupNormBwd)
	j.norm = s
	j.a[0], j.a[1], j.a[2], j.a[3], j.a[4] = xs, gs, st, dys, dxs
	j.sums[0], j.sums[1] = sdy, sdyx
	be.forEach(j, s.N*s.G)
	for c := 0; c < s.C; c++ {
		var a, b float64
		for n := 0; n < s.N; n++ {
			a += sdy[n*s.C+c]
			b += sdyx[n*s.C+c]
		}
		if dbs != nil {
			dbs[c] += T(a)
		}
		if dgs != nil {
			dgs[c] += T(b)
		}
	}
}

// groupNormBwdItem computes group ng's per-channel sums and (when dx is wanted) its dx.
func groupNormBwdItem[T Float](j *job[T], ng int) {
	s, xs, gs, st, dys, dxs := j.norm, j.a[0], j.a[1], j.a[2], j.a[3], j.a[4]
	sdy, sdyx := j.sums[0], j.sums[1]
	cpg := s.C / s.G
	m := cpg * s.HW
	{
		mu, rstd := float64(st[2*ng]), float64(st[2*ng+1])
		c0 := (ng % s.G) * cpg
		n := ng / s.G
		var m1, m2 float64 // Σ g, Σ g·x̂ over the group
		for cc := 0; cc < cpg; cc++ {
			c := c0 + cc
			off := ng*m + cc*s.HW
			gc := float64(gs[c])
			a, b := sumDyDyXhat(dys[off:off+s.HW], xs[off:off+s.HW], mu, rstd) // Σ dy, Σ dy·x̂ over the channel
			sdy[n*s.C+c], sdyx[n*s.C+c] = a, b
			m1 += a * gc
			m2 += b * gc
		}
		if dxs == nil {
			return
		}
		m1 /= float64(m)
		m2 /= float64(m)
		for cc := 0; cc < cpg; cc++ {
			off := ng*m + cc*s.HW
			gc := float64(gs[c0+cc])
			for i := off; i < off+s.HW; i++ {
				xh := (float64(xs[i]) - mu) * rstd
				dxs[i] += T(rstd * (float64(dys[i])*gc - m1 - xh*m2))
			}
		}
	}
}

// The float64 sums below keep four partial sums, element i going to partial i mod 4,
// combined as (p0+p1)+(p2+p3): four independent chains of additions instead of one,
// which the latency of a floating-point addition (4 cycles) would otherwise serialise.
// The order is fixed, so the sums are the same on every run and for any worker count.

// sum64 is Σ v[i].
func sum64[T Float](v []T) float64 {
	var p0, p1, p2, p3 float64
	i := 0
	for ; i+4 <= len(v); i += 4 {
		p0 += float64(v[i])
		p1 += float64(v[i+1])
		p2 += float64(v[i+2])
		p3 += float64(v[i+3])
	}
	for ; i < len(v); i++ {
		p0 += float64(v[i])
	}
	return (p0 + p1) + (p2 + p3)
}

// sumSqDev64 is Σ (v[i] − mu)².
func sumSqDev64[T Float](v []T, mu float64) float64 {
	var p0, p1, p2, p3 float64
	i := 0
	for ; i+4 <= len(v); i += 4 {
		d0, d1 := float64(v[i])-mu, float64(v[i+1])-mu
		d2, d3 := float64(v[i+2])-mu, float64(v[i+3])-mu
		p0 += d0 * d0
		p1 += d1 * d1
		p2 += d2 * d2
		p3 += d3 * d3
	}
	for ; i < len(v); i++ {
		d := float64(v[i]) - mu
		p0 += d * d
	}
	return (p0 + p1) + (p2 + p3)
}

// sumDyDyXhat is (Σ dy[i], Σ dy[i]·x̂[i]) with x̂[i] = (x[i] − mu)·rstd.
func sumDyDyXhat[T Float](dy, x []T, mu, rstd float64) (float64, float64) {
	var a0, a1, a2, a3, b0, b1, b2, b3 float64
	x = x[:len(dy)]
	i := 0
	for ; i+4 <= len(dy); i += 4 {
		d0, d1, d2, d3 := float64(dy[i]), float64(dy[i+1]), float64(dy[i+2]), float64(dy[i+3])
		a0 += d0
		a1 += d1
		a2 += d2
		a3 += d3
		b0 += d0 * ((float64(x[i]) - mu) * rstd)
		b1 += d1 * ((float64(x[i+1]) - mu) * rstd)
		b2 += d2 * ((float64(x[i+2]) - mu) * rstd)
		b3 += d3 * ((float64(x[i+3]) - mu) * rstd)
	}
	for ; i < len(dy); i++ {
		d := float64(dy[i])
		a0 += d
		b0 += d * ((float64(x[i]) - mu) * rstd)
	}
	return (a0 + a1) + (a2 + a3), (b0 + b1) + (b2 + b3)
}
