package cuda

import (
	"fmt"
	"math"

	"github.com/ddpmgo/ddpm/ops"
)

// Launchers of kernels/noise.cu.

// Normal: y[i] = rng.Normal(seed, stream, offset+i), bit for bit.
func (be *Backend) Normal(seed uint64, stream uint32, offset uint64, y ops.Buf) {
	ys := be.buf("Normal", "y", y)
	be.launch1D("Normal", "rng_normal_f32", ys.n, Ptr(ys.p), I64(int64(ys.n)), U64(seed), U32(stream), U64(offset))
}

// Uniform: y[i] = rng.Uniform(seed, stream, offset+i), bit for bit.
func (be *Backend) Uniform(seed uint64, stream uint32, offset uint64, y ops.Buf) {
	ys := be.buf("Uniform", "y", y)
	be.launch1D("Uniform", "rng_uniform_f32", ys.n, Ptr(ys.p), I64(int64(ys.n)), U64(seed), U32(stream), U64(offset))
}

// diffArgs checks the per-sample shapes shared by the diffusion ops: t has n entries, the tables T, the rest n·d.
func (be *Backend) diffArgs(op string, sch *ops.Schedule, n, d int, t ops.Buf, tables, names []string,
	tabs []ops.Buf, data []ops.Buf) (*Buf, []*Buf, []*Buf) {
	if n < 0 || d < 0 || sch == nil || sch.T <= 0 {
		panic(fmt.Sprintf("cuda %s: n=%d d=%d schedule %v", op, n, d, sch))
	}
	ts := be.bufs(op, n, []string{"t"}, t)[0]
	tb := be.bufs(op, sch.T, tables, tabs...)
	ds := be.bufs(op, n*d, names, data...)
	return ts, tb, ds
}

// QSample: xt = √ᾱ_t·x0 + √(1−ᾱ_t)·eps per sample, t[s] indexing the schedule tables.
func (be *Backend) QSample(sch *ops.Schedule, n, d int, t, x0, eps, xt ops.Buf) {
	ts, tb, ds := be.diffArgs("QSample", sch, n, d, t,
		[]string{"schedule.SqrtAlphaBar", "schedule.SqrtOneMinusAlphaBar"}, []string{"x0", "eps", "xt"},
		[]ops.Buf{sch.SqrtAlphaBar, sch.SqrtOneMinusAlphaBar}, []ops.Buf{x0, eps, xt})
	be.launch1D("QSample", "qsample_f32", n*d, Ptr(tb[0].p), Ptr(tb[1].p), Ptr(ts.p), Ptr(ds[0].p), Ptr(ds[1].p),
		Ptr(ds[2].p), I32(int32(n)), I32(int32(d)), I32(int32(sch.T)))
}

// Posterior is the fused DDPM reverse step (see ops.Backend and kernels/noise.cu).
func (be *Backend) Posterior(sch *ops.Schedule, n, d int, clip bool, t, xt, epsHat, z, out ops.Buf) {
	ts, tb, ds := be.diffArgs("Posterior", sch, n, d, t,
		[]string{"schedule.SqrtRecipAlphaBar", "schedule.SqrtRecipM1AlphaBar", "schedule.PosteriorCoef1",
			"schedule.PosteriorCoef2", "schedule.Sigma"}, []string{"xt", "epsHat", "z", "out"},
		[]ops.Buf{sch.SqrtRecipAlphaBar, sch.SqrtRecipM1AlphaBar, sch.PosteriorCoef1, sch.PosteriorCoef2, sch.Sigma},
		[]ops.Buf{xt, epsHat, z, out})
	be.launch1D("Posterior", "posterior_f32", n*d, Ptr(tb[0].p), Ptr(tb[1].p), Ptr(tb[2].p), Ptr(tb[3].p),
		Ptr(tb[4].p), Ptr(ts.p), Ptr(ds[0].p), Ptr(ds[1].p), Ptr(ds[2].p), Ptr(ds[3].p), I32(int32(n)),
		I32(int32(d)), I32(int32(sch.T)), I32(b2i(clip)))
}

// DDIMStep: one DDIM step from ᾱ = alphaBar to ᾱ_prev = alphaBarPrev (see ops.Backend); scalars formed in float64.
func (be *Backend) DDIMStep(alphaBar, alphaBarPrev, eta float32, clip bool, xt, epsHat, z, out ops.Buf) {
	s := be.bufs("DDIMStep", xt.Len(), []string{"xt", "epsHat", "z", "out"}, xt, epsHat, z, out)
	ab, abp := float64(alphaBar), float64(alphaBarPrev)
	if !(ab > 0 && ab < 1) || !(abp >= ab && abp <= 1) || eta < 0 {
		panic(fmt.Sprintf("cuda DDIMStep: need 0 < alphaBar (%v) < 1, alphaBar ≤ alphaBarPrev (%v) ≤ 1, eta (%v) ≥ 0", alphaBar, alphaBarPrev, eta))
	}
	sigma := float64(eta) * math.Sqrt((1-abp)/(1-ab)) * math.Sqrt(1-ab/abp)
	dir := math.Sqrt(max(0, 1-abp-sigma*sigma))
	n := s[0].n
	be.launch1D("DDIMStep", "ddim_f32", n, Ptr(s[0].p), Ptr(s[1].p), Ptr(s[2].p), Ptr(s[3].p), I64(int64(n)),
		F32(float32(math.Sqrt(1/ab))), F32(float32(math.Sqrt(1/ab-1))), F32(float32(math.Sqrt(ab))),
		F32(float32(math.Sqrt(1-ab))), F32(float32(math.Sqrt(abp))), F32(float32(dir)), F32(float32(sigma)),
		I32(b2i(clip)))
}

func b2i(b bool) int32 {
	if b {
		return 1
	}
	return 0
}
