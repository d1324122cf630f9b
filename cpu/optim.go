package cpu

import (
	"math"

	"github.com/ddpmgo/ddpm/ops"
)

// AdamWStep updates p, m, v in place from the gradient g (see ops.AdamW); the per-element arithmetic runs in T.
func (be *Backend[T]) AdamWStep(h ops.AdamW, p, g, m, v ops.Buf) {
	defer be.stop(FamOptimizer, be.start())
	s := be.same("AdamWStep", "p, g, m, v", p, g, m, v)
	j := be.newJob(jAdamW)
	j.a[0], j.a[1], j.a[2], j.a[3] = s[0], s[1], s[2], s[3]
	j.c[0], j.c[1], j.c[2], j.c[3] = T(h.Beta1), T(h.Beta2), T(h.RC1), T(h.RC2)
	j.c[4], j.c[5], j.c[6], j.c[7] = T(h.LR), T(h.Decay), T(h.Eps), T(h.GradScale)
	be.parallel(j, len(s[0]))
}

func adamWRange[T Float](j *job[T], lo, hi int) {
	ps, gs, ms, vs := j.a[0], j.a[1], j.a[2], j.a[3]
	b1, b2, rc1, rc2 := j.c[0], j.c[1], j.c[2], j.c[3]
	lr, decay, eps, gsc := j.c[4], j.c[5], j.c[6], j.c[7]
	for i := lo; i < hi; i++ {
		gi := gsc * gs[i]
		mi := b1*ms[i] + (1-b1)*gi
		vi := b2*vs[i] + (1-b2)*gi*gi
		ms[i], vs[i] = mi, vi
		ps[i] = ps[i] - decay*ps[i] - lr*(mi*rc1)/(T(math.Sqrt(float64(vi*rc2)))+eps)
	}
}

// EMA: e[i] = decay·e[i] + (1−decay)·p[i].
func (be *Backend[T]) EMA(decay float32, e, p ops.Buf) {
	defer be.stop(FamOptimizer, be.start())
	s := be.same("EMA", "e, p", e, p)
	j := be.newJob(jEMA)
	j.a[0], j.a[1], j.c[0] = s[0], s[1], T(decay)
	be.parallel(j, len(s[0]))
}

func emaRange[T Float](j *job[T], lo, hi int) {
	es, ps, d := j.a[0][lo:hi], j.a[1][lo:hi], j.c[0]
	for i := range es {
		es[i] = d*es[i] + (1-d)*ps[i]
	}
}
