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

// GroupNorm: per (n, g), over the M = (C/G)·HW elements of channels [g·C/G, (g+1)·C/G),
// μ = Σx/M and σ² = Σ(x−μ)²/M (two passes, float64), rstd = 1/√(σ²+eps), then
// y[n,c,i] = (x[n,c,i] − μ)·rstd·gamma[c] + beta[c]. stats[2(n·G+g)] = μ and
// stats[2(n·G+g)+1] = rstd are saved for the backward pass. (n, g) pairs run in parallel.
func (be *Backend[T]) GroupNorm(s ops.NormShape, x, gamma, beta, y, stats ops.Buf) {
	checkNorm("GroupNorm", s)
	xs := be.arg("GroupNorm", s, "x", x, s.N*s.C*s.HW)
	gs := be.arg("GroupNorm", s, "gamma", gamma, s.C)
	bs := be.arg("GroupNorm", s, "beta", beta, s.C)
	ys := be.arg("GroupNorm", s, "y", y, s.N*s.C*s.HW)
	st := be.arg("GroupNorm", s, "stats", stats, 2*s.N*s.G)
	cpg := s.C / s.G
	m := cpg * s.HW
	be.forEach(s.N*s.G, func(_, ng int) {
		seg := xs[ng*m : (ng+1)*m]
		var sum float64
		for _, v := range seg {
			sum += float64(v)
		}
		mu := sum / float64(m)
		var ss float64
		for _, v := range seg {
			d := float64(v) - mu
			ss += d * d
		}
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
	})
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
	checkNorm("GroupNormBackward", s)
	xs := be.arg("GroupNormBackward", s, "x", x, s.N*s.C*s.HW)
	gs := be.arg("GroupNormBackward", s, "gamma", gamma, s.C)
	st := be.arg("GroupNormBackward", s, "stats", stats, 2*s.N*s.G)
	dys := be.arg("GroupNormBackward", s, "dy", dy, s.N*s.C*s.HW)
	dxs := be.opt("GroupNormBackward", s, "dx", dx, s.N*s.C*s.HW)
	dgs := be.opt("GroupNormBackward", s, "dgamma", dgamma, s.C)
	dbs := be.opt("GroupNormBackward", s, "dbeta", dbeta, s.C)
	cpg := s.C / s.G
	m := cpg * s.HW
	be.sums = grow(be.sums, 2*s.N*s.C)
	sdy, sdyx := be.sums[:s.N*s.C], be.sums[s.N*s.C:]
	be.forEach(s.N*s.G, func(_, ng int) {
		mu, rstd := float64(st[2*ng]), float64(st[2*ng+1])
		c0 := (ng % s.G) * cpg
		n := ng / s.G
		var m1, m2 float64 // Σ g, Σ g·x̂ over the group
		for cc := 0; cc < cpg; cc++ {
			c := c0 + cc
			off := ng*m + cc*s.HW
			gc := float64(gs[c])
			var a, b float64 // Σ dy, Σ dy·x̂ over the channel
			for i := off; i < off+s.HW; i++ {
				d, xh := float64(dys[i]), (float64(xs[i])-mu)*rstd
				a += d
				b += d * xh
			}
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
	})
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
