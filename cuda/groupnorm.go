package cuda

import (
	"fmt"

	"github.com/ddpmgo/ddpm/ops"
)

// Launchers of kernels/groupnorm.cu.

// gnThreads is GN_THREADS of kernels/groupnorm.cu: one block per (sample, group).
const gnThreads = 256

func checkNorm(op string, s ops.NormShape) {
	if s.N < 0 || s.C < 1 || s.HW < 1 || s.G < 1 || s.C%s.G != 0 || !(s.Eps >= 0) {
		panic(fmt.Sprintf("cuda %s %+v: invalid shape (C must be a positive multiple of G, eps ≥ 0)", op, s))
	}
	i32(op, s, s.N*s.C*s.HW, s.N*s.G, 2*s.N*s.C)
}

// GroupNorm (ops.Backend.GroupNorm): one block per (n, g), two passes over the group (kernels/groupnorm.cu).
func (be *Backend) GroupNorm(s ops.NormShape, x, gamma, beta, y, stats ops.Buf) {
	be.groupNorm("GroupNorm", "groupnorm_fwd_f32", s, x, gamma, beta, y, stats)
}

// GroupNormSiLU (ops.Backend.GroupNormSiLU): GroupNorm's kernel with SiLU applied as y is written
// (groupnorm_silu_fwd_f32); the normalised value is not stored.
func (be *Backend) GroupNormSiLU(s ops.NormShape, x, gamma, beta, y, stats ops.Buf) {
	be.groupNorm("GroupNormSiLU", "groupnorm_silu_fwd_f32", s, x, gamma, beta, y, stats)
}

func (be *Backend) groupNorm(op, kernel string, s ops.NormShape, x, gamma, beta, y, stats ops.Buf) {
	checkNorm(op, s)
	n := s.N * s.C * s.HW
	xs := be.arg(op, s, "x", x, n)
	gs := be.arg(op, s, "gamma", gamma, s.C)
	bs := be.arg(op, s, "beta", beta, s.C)
	ys := be.arg(op, s, "y", y, n)
	st := be.arg(op, s, "stats", stats, 2*s.N*s.G)
	if s.N == 0 {
		return
	}
	be.keep(op, be.d.Launch(kernel, Dim3{X: s.N * s.G}, Dim3{X: gnThreads}, 0, Ptr(xs.p), Ptr(gs.p), Ptr(bs.p),
		Ptr(ys.p), Ptr(st.p), I32(int32(s.C)), I32(int32(s.HW)), I32(int32(s.G)), F32(s.Eps)))
}

// GroupNormBackward accumulates, with x̂ = (x−μ)·rstd and gy = dy·gamma[c],
//
//	dx += rstd·(gy − mean_group(gy) − x̂·mean_group(gy·x̂)),  dgamma[c] += Σ_{n,i} dy·x̂,  dbeta[c] += Σ_{n,i} dy
//
// Any of dx, dgamma, dbeta may be nil. One block per (n, g) writes the per-(n, c) sums to scratch; the block that
// finishes last (a ticket counter, be.tickets) adds them over n in order, so the parameter gradients are
// deterministic and the op is one launch.
func (be *Backend) GroupNormBackward(s ops.NormShape, x, gamma, stats, dy, dx, dgamma, dbeta ops.Buf) {
	be.groupNormBackward("GroupNormBackward", s, x, gamma, nil, stats, dy, dx, dgamma, dbeta, nil)
}

// GroupNormBackwardRes (ops.NormBackwardFuser): GroupNormBackward with dx = (dx + res) + the norm's gradient in the
// kernel's store (kernels/groupnorm.cu), instead of an Axpy launch before it.
func (be *Backend) GroupNormBackwardRes(s ops.NormShape, x, gamma, stats, dy, dx, dgamma, dbeta, res ops.Buf) {
	be.groupNormBackward("GroupNormBackwardRes", s, x, gamma, nil, stats, dy, dx, dgamma, dbeta, res)
}

// GroupNormSiLUBackwardRes (ops.NormBackwardFuser): GroupNormSiLUBackward with res added as GroupNormBackwardRes
// adds it.
func (be *Backend) GroupNormSiLUBackwardRes(s ops.NormShape, x, gamma, beta, stats, dy, dx, dgamma, dbeta, res ops.Buf) {
	be.groupNormBackward("GroupNormSiLUBackwardRes", s, x, gamma, beta, stats, dy, dx, dgamma, dbeta, res)
}

var _ ops.NormBackwardFuser = (*Backend)(nil)

// GroupNormSiLUBackward (ops.Backend.GroupNormSiLUBackward): GroupNormBackward's kernel as
// groupnorm_silu_bwd_f32, recomputing n = x̂·gamma + beta and the SiLU gradient at n from x and stats in both of
// its passes, so no activation buffer is read beyond x and dy.
func (be *Backend) GroupNormSiLUBackward(s ops.NormShape, x, gamma, beta, stats, dy, dx, dgamma, dbeta ops.Buf) {
	be.groupNormBackward("GroupNormSiLUBackward", s, x, gamma, beta, stats, dy, dx, dgamma, dbeta, nil)
}

// groupNormBackward launches GroupNormBackward (beta nil) or GroupNormSiLUBackward (beta given), with res (may be
// nil) added into dx first.
func (be *Backend) groupNormBackward(op string, s ops.NormShape, x, gamma, beta, stats, dy, dx, dgamma, dbeta,
	res ops.Buf) {
	checkNorm(op, s)
	freshDx := be.takeZero(dx) // dx is a waiting zero fill: store instead of adding (fills.go)
	n := s.N * s.C * s.HW
	xs := be.arg(op, s, "x", x, n)
	gs := be.arg(op, s, "gamma", gamma, s.C)
	var bs *Buf
	if beta != nil {
		bs = be.arg(op, s, "beta", beta, s.C)
	}
	st := be.arg(op, s, "stats", stats, 2*s.N*s.G)
	dys := be.arg(op, s, "dy", dy, n)
	dxs := be.opt(op, s, "dx", dx, n)
	dgs := be.opt(op, s, "dgamma", dgamma, s.C)
	dbs := be.opt(op, s, "dbeta", dbeta, s.C)
	var rs *Buf
	if res != nil {
		if dxs == nil {
			panic(fmt.Sprintf("cuda %s %+v: a residual without dx", op, s))
		}
		rs = be.arg(op, s, "res", res, n)
		if overlaps(rs, dxs) {
			panic(fmt.Sprintf("cuda %s %+v: the residual overlaps dx", op, s))
		}
	}
	if s.N == 0 || (dxs == nil && dgs == nil && dbs == nil) {
		return
	}
	sums := Ptr(0)
	if dgs != nil || dbs != nil {
		sums = Ptr(be.scratch(op, 2*s.N*s.C))
	}
	if bs != nil {
		be.keep(op, be.d.Launch("groupnorm_silu_bwd_f32", Dim3{X: s.N * s.G}, Dim3{X: gnThreads}, 0, Ptr(xs.p),
			Ptr(gs.p), Ptr(bs.p), Ptr(st.p), Ptr(dys.p), ptr(dxs), sums, I32(int32(s.N)), I32(int32(s.C)),
			I32(int32(s.HW)), I32(int32(s.G)), I32(b2i(!freshDx)), ptr(dgs), ptr(dbs), Ptr(be.tickets), ptr(rs)))
	} else {
		be.keep(op, be.d.Launch("groupnorm_bwd_f32", Dim3{X: s.N * s.G}, Dim3{X: gnThreads}, 0, Ptr(xs.p), Ptr(gs.p),
			Ptr(st.p), Ptr(dys.p), ptr(dxs), sums, I32(int32(s.N)), I32(int32(s.C)), I32(int32(s.HW)), I32(int32(s.G)),
			I32(b2i(!freshDx)), ptr(dgs), ptr(dbs), Ptr(be.tickets), ptr(rs)))
	}
}
