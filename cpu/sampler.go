package cpu

import (
	"fmt"

	"github.com/ddpmgo/ddpm/ops"
)

// SamplerStep, in float64 from the float32 coefficients, per element (see ops.Backend):
//
//	x̂0 = RA·x − RM·e;  x̂0 = clip(x̂0, −1, 1) if Clip
//	out = CX·x + C0·x̂0 + CE·e + CZ·z + CP·p   (terms with a zero coefficient left out, their operand not read)
//
// out may alias any input: each element is read before it is written.
func (be *Backend[T]) SamplerStep(c ops.StepCoef, x, e, z, p, out ops.Buf) {
	defer be.stop(FamOther, be.start())
	xs := be.buf("SamplerStep", "x", x)
	if xs == nil {
		panic("cpu SamplerStep: x is nil")
	}
	n := len(xs)
	operand := func(name string, b ops.Buf, read bool) []T {
		if !read {
			return nil
		}
		d := be.buf("SamplerStep", name, b)
		if d == nil || len(d) != n {
			panic(fmt.Sprintf("cpu SamplerStep %+v: %s has %d elements (nil: %v), want x's %d", c, name, len(d), d == nil, n))
		}
		return d
	}
	j := be.newJob(jSamplerStep)
	j.a[0] = xs
	j.a[1] = operand("e", e, c.C0 != 0 || c.CE != 0)
	j.a[2] = operand("z", z, c.CZ != 0)
	j.a[3] = operand("p", p, c.CP != 0)
	j.a[4] = operand("out", out, true)
	j.d = [8]float64{float64(c.RA), float64(c.RM), float64(c.CX), float64(c.C0), float64(c.CE), float64(c.CZ), float64(c.CP)}
	j.flag = c.Clip
	be.parallel(j, n)
}

func samplerStepRange[T Float](j *job[T], lo, hi int) {
	xs, es, zs, ps, os := j.a[0], j.a[1], j.a[2], j.a[3], j.a[4]
	ra, rm, cx, c0, ce, cz, cp := j.d[0], j.d[1], j.d[2], j.d[3], j.d[4], j.d[5], j.d[6]
	for k := lo; k < hi; k++ {
		x := float64(xs[k])
		v := 0.0
		if cx != 0 {
			v += cx * x
		}
		if c0 != 0 {
			x0 := ra*x - rm*float64(es[k])
			if j.flag {
				x0 = max(-1, min(1, x0))
			}
			v += c0 * x0
		}
		if ce != 0 {
			v += ce * float64(es[k])
		}
		if cz != 0 {
			v += cz * float64(zs[k])
		}
		if cp != 0 {
			v += cp * float64(ps[k])
		}
		os[k] = T(v)
	}
}
