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
// μ and σ² in two passes in float64 with four partial sums (see sum64; on the float32 backend with AVX-512, 32 partial
// sums: see groupnorm_vec.go). (n, g) pairs run in parallel, gnChunk consecutive ones per item.
func (be *Backend[T]) GroupNorm(s ops.NormShape, x, gamma, beta, y, stats ops.Buf) {
	be.groupNorm("GroupNorm", jGroupNorm, s, x, gamma, beta, y, stats)
}

// GroupNormSiLU (ops.Backend.GroupNormSiLU) is GroupNorm with SiLU applied to each channel's run of y as soon as
// it is written (in place, by the same code as SiLU, so that the result is the unfused one bit for bit).
func (be *Backend[T]) GroupNormSiLU(s ops.NormShape, x, gamma, beta, y, stats ops.Buf) {
	be.groupNorm("GroupNormSiLU", jGroupNormSiLU, s, x, gamma, beta, y, stats)
}

func (be *Backend[T]) groupNorm(op string, kind jobKind, s ops.NormShape, x, gamma, beta, y, stats ops.Buf) {
	defer be.stop(FamGroupNorm, be.start())
	checkNorm(op, s)
	xs := arg(be, op, s, "x", x, s.N*s.C*s.HW)
	gs := arg(be, op, s, "gamma", gamma, s.C)
	bs := arg(be, op, s, "beta", beta, s.C)
	ys := arg(be, op, s, "y", y, s.N*s.C*s.HW)
	st := arg(be, op, s, "stats", stats, 2*s.N*s.G)
	j := be.newJob(kind)
	j.norm = s
	j.a[0], j.a[1], j.a[2], j.a[3], j.a[4] = xs, gs, bs, ys, st
	be.forEach(j, gnItems(s))
}

// gnChunk is the number of (n, g) groups in one item of a group norm job: consecutive groups, so that an item's
// last pass over a group can prefetch the next group's inputs (into L2, where the next group's first pass finds
// them). Eight keeps ≥ 8 items per worker at the smallest U-Net layer of a batch of 64 (2048 groups).
const gnChunk = 8

// gnItems is the number of items of a group norm job: groups [i·gnChunk, (i+1)·gnChunk) ∩ [0, N·G) for item i.
func gnItems(s ops.NormShape) int { return (s.N*s.G + gnChunk - 1) / gnChunk }

// groupNormItem normalises the groups ng = n·G + g of item i (see gnItems).
func groupNormItem[T Float](j *job[T], i int) {
	s, xs, gs, bs, ys, st := j.norm, j.a[0], j.a[1], j.a[2], j.a[3], j.a[4]
	cpg := s.C / s.G
	m := cpg * s.HW
	last := min((i+1)*gnChunk, s.N*s.G) - 1
	for ng := i * gnChunk; ng <= last; ng++ {
		seg := xs[ng*m : (ng+1)*m]
		var next []T // the next group's x, prefetched during the last pass (nil: none in this item)
		if ng < last {
			next = xs[(ng+1)*m : (ng+2)*m]
		}
		mu := fastSum64(seg) / float64(m)
		var w []T // GroupNorm: y, prefetched during the second pass (GroupNormSiLU's third pass is long enough to hide its own misses)
		if j.kind == jGroupNorm {
			w = ys[ng*m : (ng+1)*m]
		}
		ss := gnSumSqDev64(seg, mu, w)
		rstd := 1 / math.Sqrt(ss/float64(m)+float64(s.Eps))
		st[2*ng], st[2*ng+1] = T(mu), T(rstd)
		tm, tr := T(mu), T(rstd)
		c0 := (ng % s.G) * cpg
		out := ys[ng*m : (ng+1)*m]
		for cc := 0; cc < cpg; cc++ {
			a, b := tr*gs[c0+cc], bs[c0+cc]
			lo, hi := cc*s.HW, (cc+1)*s.HW
			var pf []T
			if next != nil {
				pf = next[lo:hi]
			}
			if j.kind == jGroupNorm {
				gnAffine(seg[lo:hi], out[lo:hi], tm, a, b, pf)
			} else {
				gnAffineSiLU(seg[lo:hi], out[lo:hi], tm, a, b, pf)
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
	write := be.takes(dx) // waiting zeros (fills.go): dx = … instead of +=
	xs := arg(be, "GroupNormBackward", s, "x", x, s.N*s.C*s.HW)
	gs := arg(be, "GroupNormBackward", s, "gamma", gamma, s.C)
	st := arg(be, "GroupNormBackward", s, "stats", stats, 2*s.N*s.G)
	dys := arg(be, "GroupNormBackward", s, "dy", dy, s.N*s.C*s.HW)
	dxs := opt(be, "GroupNormBackward", s, "dx", dx, s.N*s.C*s.HW)
	dgs := opt(be, "GroupNormBackward", s, "dgamma", dgamma, s.C)
	dbs := opt(be, "GroupNormBackward", s, "dbeta", dbeta, s.C)
	be.groupNormBackward(s, xs, gs, nil, st, dys, dxs, dgs, dbs, write)
}

// GroupNormSiLUBackward (ops.Backend.GroupNormSiLUBackward) recomputes, per group, n = (x − μ)·rstd·gamma + beta as
// GroupNormSiLU's forward did (same rounding) and the gradient at n, gn = dy·σ(n)·(1 + n·(1−σ(n))), by the same
// code as SiLUBackward into zeros, into per-worker scratch (one group's gn, in cache); then it is GroupNormBackward
// with dy = gn on that group. Results equal the unfused composition bit for bit.
func (be *Backend[T]) GroupNormSiLUBackward(s ops.NormShape, x, gamma, beta, stats, dy, dx, dgamma, dbeta ops.Buf) {
	const op = "GroupNormSiLUBackward"
	defer be.stop(FamGroupNorm, be.start())
	checkNorm(op, s)
	n := s.N * s.C * s.HW
	write := be.takes(dx) // waiting zeros (fills.go): dx = … instead of +=
	xs := arg(be, op, s, "x", x, n)
	gs := arg(be, op, s, "gamma", gamma, s.C)
	bs := arg(be, op, s, "beta", beta, s.C)
	st := arg(be, op, s, "stats", stats, 2*s.N*s.G)
	dys := arg(be, op, s, "dy", dy, n)
	dxs := opt(be, op, s, "dx", dx, n)
	dgs := opt(be, op, s, "dgamma", dgamma, s.C)
	dbs := opt(be, op, s, "dbeta", dbeta, s.C)
	if dxs == nil && dgs == nil && dbs == nil {
		return
	}
	be.groupNormBackward(s, xs, gs, bs, st, dys, dxs, dgs, dbs, write)
}

// groupNormBackward is GroupNormBackward on checked slices, or GroupNormSiLUBackward when bs (beta) is not nil;
// writeDx: dx is written, not added to.
func (be *Backend[T]) groupNormBackward(s ops.NormShape, xs, gs, bs, st, dys, dxs, dgs, dbs []T, writeDx bool) {
	be.sums = grow(be.sums, 2*s.N*s.C)
	sdy, sdyx := be.sums[:s.N*s.C], be.sums[s.N*s.C:]
	j := be.newJob(jGroupNormBwd)
	if bs != nil {
		j.kind = jGroupNormSiLUGrad
		cpg := s.C / s.G
		j.sets[0] = scratch(&be.gnsilu, be.workers, (cpg+1)*s.HW) // per worker: n of a channel, gn of a group
	}
	j.norm = s
	j.a[0], j.a[1], j.a[2], j.a[3], j.a[4], j.a[5] = xs, gs, st, dys, dxs, bs
	j.flag = writeDx
	j.sums[0], j.sums[1] = sdy, sdyx
	be.forEach(j, gnItems(s))
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

// groupNormBwdItem runs groupNormBwdGroup on the groups of item i (see gnItems) on worker wk. GroupNormBackward
// prefetches the next group's x and dy during a group's dx pass; GroupNormSiLUBackward does not (its first pass
// computes long enough to hide its own misses, and measured no faster with it).
func groupNormBwdItem[T Float](j *job[T], wk, i int) {
	last := min((i+1)*gnChunk, j.norm.N*j.norm.G) - 1
	for ng := i * gnChunk; ng <= last; ng++ {
		groupNormBwdGroup(j, wk, ng, ng < last && j.kind == jGroupNormBwd)
	}
}

// groupNormBwdGroup computes group ng's per-channel sums and (when dx is wanted) its dx, on worker wk, prefetching
// the next group's x and dy during the dx pass when hasNext. For GroupNormSiLUBackward (jGroupNormSiLUGrad) it first
// writes each channel's n and gn into the worker's scratch (see GroupNormSiLUBackward) and uses gn as dy.
func groupNormBwdGroup[T Float](j *job[T], wk, ng int, hasNext bool) {
	s, xs, gs, st, dys, dxs, bs := j.norm, j.a[0], j.a[1], j.a[2], j.a[3], j.a[4], j.a[5]
	sdy, sdyx := j.sums[0], j.sums[1]
	cpg := s.C / s.G
	m := cpg * s.HW
	xg, dyg := xs[ng*m:(ng+1)*m], dys[ng*m:(ng+1)*m]
	var nx, ndy []T // the next group's x and dy (nil: none in this item)
	if hasNext {
		nx, ndy = xs[(ng+1)*m:(ng+2)*m], dys[(ng+1)*m:(ng+2)*m]
	}
	var dxg []T // nil when dx is not wanted
	if dxs != nil {
		dxg = dxs[ng*m : (ng+1)*m]
	}
	var nv, gv []T
	if j.kind == jGroupNormSiLUGrad {
		w := j.sets[0][wk]
		nv, gv = w[:s.HW], w[s.HW:s.HW+m]
	}
	mu, rstd := float64(st[2*ng]), float64(st[2*ng+1])
	c0 := (ng % s.G) * cpg
	n := ng / s.G
	var m1, m2 float64 // Σ g, Σ g·x̂ over the group
	for cc := 0; cc < cpg; cc++ {
		c := c0 + cc
		lo, hi := cc*s.HW, (cc+1)*s.HW
		gc := float64(gs[c])
		var w []T // GroupNormSiLUBackward: dx of the channel, prefetched during the long SiLU pass for the dx pass
		if dxg != nil && gv != nil {
			w = dxg[lo:hi]
		}
		var a, b float64 // Σ dy, Σ dy·x̂ over the channel (dy: gn for GroupNormSiLUBackward)
		if gv != nil {
			a, b = gnSiLUGrad(xg[lo:hi], dyg[lo:hi], nv, gv[lo:hi], st[2*ng], st[2*ng+1]*gs[c], bs[c], mu, rstd, w)
		} else {
			a, b = gnSumDyDyXhat(dyg[lo:hi], xg[lo:hi], mu, rstd, w)
		}
		sdy[n*s.C+c], sdyx[n*s.C+c] = a, b
		m1 += a * gc
		m2 += b * gc
	}
	if dxs == nil {
		return
	}
	if gv != nil {
		dyg = gv
	}
	m1 /= float64(m)
	m2 /= float64(m)
	for cc := 0; cc < cpg; cc++ {
		lo, hi := cc*s.HW, (cc+1)*s.HW
		var pf1, pf2 []T
		if hasNext {
			pf1, pf2 = nx[lo:hi], ndy[lo:hi]
		}
		gnDx(dyg[lo:hi], xg[lo:hi], dxg[lo:hi], mu, rstd, float64(gs[c0+cc]), m1, m2, pf1, pf2, j.flag)
	}
}

// The float64 sums below keep four partial sums, element i going to partial i mod 4,
// combined as (p0+p1)+(p2+p3): four independent chains of additions instead of one,
// which the latency of a floating-point addition (4 cycles) would otherwise serialise.
// The order is fixed, so the sums are the same on every run and for any worker count.
// They are the float64 backend's, and the float32 backend's without AVX-512; with it,
// group norm uses package vec's 32-partial kernels (groupnorm_vec.go).

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

// siluInPlace is SiLU's loop (siluRange) over v, in place.
func siluInPlace[T Float](v []T) {
	if v32, ok := any(v).([]float32); ok && siluVec(v32, v32) {
		return
	}
	for i, x := range v {
		v[i] = x / (1 + expT(-x))
	}
}

// siluBwdSlice is SiLUBackward's loop (siluBwdRange): dx += dy·σ(x)·(1 + x·(1−σ(x))).
func siluBwdSlice[T Float](xs, dys, dxs []T) {
	if x32, ok := any(xs).([]float32); ok && siluBwdVec(x32, any(dys).([]float32), any(dxs).([]float32)) {
		return
	}
	for i, v := range xs {
		sg := 1 / (1 + expT(-v))
		dxs[i] += dys[i] * sg * (1 + v*(1-sg))
	}
}
