package cpu

import (
	"fmt"
	"math"

	"github.com/ddpmgo/ddpm/ops"
)

func checkAttn(op string, s ops.AttnShape) {
	if s.N < 0 || s.L < 1 || s.Heads < 1 || s.D < 1 {
		panic(fmt.Sprintf("cpu %s %+v: invalid shape", op, s))
	}
}

// Attention, per (sample n, head h), with q_h = q[n, :, h·D:(h+1)·D] ([L, D], row
// stride Heads·D) and likewise k_h, v_h, o_h:
//
//	S = q_h·k_hᵀ/√D;  P[i,j] = exp(S[i,j] − max_j S[i,·]) / Σ_j exp(…);  o_h = P·v_h
//
// P is written to p[n, h] ([L, L]) and kept for the backward pass. The exponentials
// run in T (exp32 for float32) and the row sums in float64. (n, h) pairs run in parallel.
func (be *Backend[T]) Attention(s ops.AttnShape, q, k, v, o, p ops.Buf) {
	defer be.stop(FamAttention, be.start())
	checkAttn("Attention", s)
	hd := s.Heads * s.D
	qs := arg(be, "Attention", s, "q", q, s.N*s.L*hd)
	ks := arg(be, "Attention", s, "k", k, s.N*s.L*hd)
	vs := arg(be, "Attention", s, "v", v, s.N*s.L*hd)
	os := arg(be, "Attention", s, "o", o, s.N*s.L*hd)
	ps := arg(be, "Attention", s, "p", p, s.N*s.Heads*s.L*s.L)
	qs, ks, vs = be.bf(0, qs), be.bf(1, ks), be.bf(2, vs) // bf16: rounded copies (bf16.go)
	j := be.newJob(jAttention)
	j.attn = s
	j.a[0], j.a[1], j.a[2], j.a[3], j.a[4] = qs, ks, vs, os, ps
	if be.prec == ops.BF16 {
		j.sets[0] = scratch(&be.bfw, be.workers, s.L*s.L)
	}
	be.forEach(j, s.N*s.Heads)
}

// attentionItem is the forward pass of (sample, head) nh.
func attentionItem[T Float](j *job[T], wk, nh int) {
	s, qs, ks, vs, os, ps := j.attn, j.a[0], j.a[1], j.a[2], j.a[3], j.a[4]
	hd := s.Heads * s.D
	scale := T(1 / math.Sqrt(float64(s.D)))
	{
		n, h := nh/s.Heads, nh%s.Heads
		off := n*s.L*hd + h*s.D
		pm := ps[nh*s.L*s.L : (nh+1)*s.L*s.L]
		gemm(false, true, s.L, s.L, s.D, scale, qs[off:], hd, ks[off:], hd, 0, pm, s.L)
		for i := 0; i < s.L; i++ {
			softmaxRow(pm[i*s.L : (i+1)*s.L])
		}
		pv := pm
		if j.sets[0] != nil { // bf16: o = bf16(P)·v, P kept in float32 for the backward pass
			pv = j.sets[0][wk]
			roundBF16To(pv, pm)
		}
		gemm(false, false, s.L, s.D, s.L, 1, pv, s.L, vs[off:], hd, 0, os[off:], hd)
	}
}

// softmaxRow replaces r by softmax(r), subtracting the row maximum first.
func softmaxRow[T Float](r []T) {
	mx := r[0]
	for _, v := range r[1:] {
		mx = max(mx, v)
	}
	var sum float64
	for j, v := range r {
		e := expT(v - mx)
		r[j] = e
		sum += float64(e)
	}
	inv := T(1 / sum)
	for j := range r {
		r[j] *= inv
	}
}

// AttentionBackward accumulates, per (n, h), from the saved P:
//
//	dv_h += Pᵀ·do_h;  dP = do_h·v_hᵀ;  dS[i,j] = P[i,j]·(dP[i,j] − Σ_l P[i,l]·dP[i,l])
//	dq_h += dS·k_h/√D;  dk_h += dSᵀ·q_h/√D
//
// Any of dq, dk, dv may be nil. Each (n, h) writes only its own slices, so the
// parallel split does not change a result.
func (be *Backend[T]) AttentionBackward(s ops.AttnShape, q, k, v, p, do, dq, dk, dv ops.Buf) {
	defer be.stop(FamAttention, be.start())
	checkAttn("AttentionBackward", s)
	hd := s.Heads * s.D
	qs := arg(be, "AttentionBackward", s, "q", q, s.N*s.L*hd)
	ks := arg(be, "AttentionBackward", s, "k", k, s.N*s.L*hd)
	vs := arg(be, "AttentionBackward", s, "v", v, s.N*s.L*hd)
	ps := arg(be, "AttentionBackward", s, "p", p, s.N*s.Heads*s.L*s.L)
	dos := arg(be, "AttentionBackward", s, "do", do, s.N*s.L*hd)
	dqs := opt(be, "AttentionBackward", s, "dq", dq, s.N*s.L*hd)
	dks := opt(be, "AttentionBackward", s, "dk", dk, s.N*s.L*hd)
	dvs := opt(be, "AttentionBackward", s, "dv", dv, s.N*s.L*hd)
	qs, ks, vs, dos = be.bf(0, qs), be.bf(1, ks), be.bf(2, vs), be.bf(3, dos) // bf16: rounded copies (bf16.go)
	j := be.newJob(jAttentionBwd)
	j.attn = s
	j.a[0], j.a[1], j.a[2], j.a[3], j.a[4] = qs, ks, vs, ps, dos
	j.sets[0] = scratch(&be.attn, be.workers, s.L*s.L)
	j.sets[1] = be.attnGrads(dqs, dks, dvs)
	if be.prec == ops.BF16 {
		j.sets[2] = scratch(&be.bfw, be.workers, s.L*s.L)
	}
	be.forEach(j, s.N*s.Heads)
}

// attnGrads returns the backend's 3-slice holder of (dq, dk, dv), reused across calls.
func (be *Backend[T]) attnGrads(dq, dk, dv []T) [][]T {
	be.attnG[0], be.attnG[1], be.attnG[2] = dq, dk, dv
	return be.attnG[:]
}

// attentionBwdItem is the backward pass of (sample, head) nh on goroutine wk.
func attentionBwdItem[T Float](j *job[T], wk, nh int) {
	s, qs, ks, vs, ps, dos := j.attn, j.a[0], j.a[1], j.a[2], j.a[3], j.a[4]
	dqs, dks, dvs := j.sets[1][0], j.sets[1][1], j.sets[1][2]
	tmp := j.sets[0]
	hd := s.Heads * s.D
	scale := T(1 / math.Sqrt(float64(s.D)))
	{
		n, h := nh/s.Heads, nh%s.Heads
		off := n*s.L*hd + h*s.D
		pm := ps[nh*s.L*s.L : (nh+1)*s.L*s.L]
		if dvs != nil {
			pv := pm
			if j.sets[2] != nil { // bf16: dv += bf16(P)ᵀ·do
				pv = j.sets[2][wk]
				roundBF16To(pv, pm)
			}
			gemm(true, false, s.L, s.D, s.L, 1, pv, s.L, dos[off:], hd, 1, dvs[off:], hd)
		}
		if dqs == nil && dks == nil {
			return
		}
		ds := tmp[wk]
		gemm(false, true, s.L, s.L, s.D, 1, dos[off:], hd, vs[off:], hd, 0, ds, s.L)
		for i := 0; i < s.L; i++ {
			pr, dr := pm[i*s.L:(i+1)*s.L], ds[i*s.L:(i+1)*s.L]
			var dot float64
			for j, pv := range pr {
				dot += float64(pv) * float64(dr[j])
			}
			for j, pv := range pr {
				dr[j] = T(float64(pv) * (float64(dr[j]) - dot))
			}
		}
		if j.sets[2] != nil { // bf16: dq, dk from bf16(dS)
			roundBF16To(ds, ds)
		}
		if dqs != nil {
			gemm(false, false, s.L, s.D, s.L, scale, ds, s.L, ks[off:], hd, 1, dqs[off:], hd)
		}
		if dks != nil {
			gemm(true, false, s.L, s.D, s.L, scale, ds, s.L, qs[off:], hd, 1, dks[off:], hd)
		}
	}
}
