package cpu

import (
	"fmt"
	"math"

	"github.com/ddpmgo/ddpm/cpu/internal/vec"
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
	j := be.newJob(jAttention)
	j.attn = s
	j.a[0], j.a[1], j.a[2], j.a[3], j.a[4] = qs, ks, vs, os, ps
	if be.prec == ops.BF16 { // per worker: the (n, h) item's operands rounded to bf16 (bf16.go)
		j.sets[0] = scratch(&be.bfw, be.workers, bf16AttnScratch(s))
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
		q, k, v, ld := qs[off:], ks[off:], vs[off:], hd
		var bw attnBF16[T]
		if j.sets[0] != nil { // bf16: S = bf16(q)·bf16(k)ᵀ, o = bf16(P)·bf16(v), P kept in float32 for the backward pass
			bw = newAttnBF16(j.sets[0][wk], s)
			q, k, v, ld = bw.round(0, qs, off, hd), bw.round(1, ks, off, hd), bw.round(2, vs, off, hd), s.D
		}
		gemm(false, true, s.L, s.L, s.D, scale, q, ld, k, ld, 0, pm, s.L)
		for i := 0; i < s.L; i++ {
			softmaxRow(pm[i*s.L : (i+1)*s.L])
		}
		pv := pm
		if bw.p != nil {
			pv = bw.p
			roundBF16To(pv, pm)
		}
		gemm(false, false, s.L, s.D, s.L, 1, pv, s.L, v, ld, 0, os[off:], hd)
	}
}

// softmaxRow replaces r by softmax(r), subtracting the row maximum first. On the float32 backend with AVX-512 it is
// vec.Softmax (the exponential of SiLU's 16-lane kernel, the sum in Sum64's order): at 8 channels a head the
// softmax, not the GEMMs, is most of attention's time.
func softmaxRow[T Float](r []T) {
	if r32, ok := any(r).([]float32); ok && useAVX512 {
		vec.Softmax(r32)
		return
	}
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
	var write [3]bool // waiting zeros (fills.go): dq, dk, dv = … instead of +=
	if s.N > 0 {
		write = [3]bool{be.takes(dq), be.takes(dk), be.takes(dv)}
	}
	qs := arg(be, "AttentionBackward", s, "q", q, s.N*s.L*hd)
	ks := arg(be, "AttentionBackward", s, "k", k, s.N*s.L*hd)
	vs := arg(be, "AttentionBackward", s, "v", v, s.N*s.L*hd)
	ps := arg(be, "AttentionBackward", s, "p", p, s.N*s.Heads*s.L*s.L)
	dos := arg(be, "AttentionBackward", s, "do", do, s.N*s.L*hd)
	dqs := opt(be, "AttentionBackward", s, "dq", dq, s.N*s.L*hd)
	dks := opt(be, "AttentionBackward", s, "dk", dk, s.N*s.L*hd)
	dvs := opt(be, "AttentionBackward", s, "dv", dv, s.N*s.L*hd)
	j := be.newJob(jAttentionBwd)
	j.attn = s
	j.a[0], j.a[1], j.a[2], j.a[3], j.a[4] = qs, ks, vs, ps, dos
	j.sets[0] = scratch(&be.attn, be.workers, s.L*s.L)
	j.sets[1] = be.attnGrads(dqs, dks, dvs)
	for i, w := range write {
		j.c[i] = 1 // the GEMMs' β for dq, dk, dv
		if w {
			j.c[i] = 0
		}
	}
	if be.prec == ops.BF16 { // per worker: the (n, h) item's operands rounded to bf16 (bf16.go)
		j.sets[2] = scratch(&be.bfw, be.workers, bf16AttnScratch(s))
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
		q, k, v, do, ld := qs[off:], ks[off:], vs[off:], dos[off:], hd
		var bw attnBF16[T]
		if j.sets[2] != nil { // bf16: every GEMM on bf16 operands; dS from the float32 P
			bw = newAttnBF16(j.sets[2][wk], s)
			do, ld = bw.round(3, dos, off, hd), s.D
			v = bw.round(2, vs, off, hd)
		}
		if dvs != nil {
			pv := pm
			if bw.p != nil { // bf16: dv += bf16(P)ᵀ·bf16(do)
				pv = bw.p
				roundBF16To(pv, pm)
			}
			gemm(true, false, s.L, s.D, s.L, 1, pv, s.L, do, ld, j.c[2], dvs[off:], hd)
		}
		if dqs == nil && dks == nil {
			return
		}
		if bw.p != nil {
			q, k = bw.round(0, qs, off, hd), bw.round(1, ks, off, hd)
		}
		ds := tmp[wk]
		gemm(false, true, s.L, s.L, s.D, 1, do, ld, v, ld, 0, ds, s.L)
		for i := 0; i < s.L; i++ {
			softmaxGradRow(pm[i*s.L:(i+1)*s.L], ds[i*s.L:(i+1)*s.L])
		}
		if bw.p != nil { // bf16: dq, dk from bf16(dS)
			roundBF16To(ds, ds)
		}
		if dqs != nil {
			gemm(false, false, s.L, s.D, s.L, scale, ds, s.L, k, ld, j.c[0], dqs[off:], hd)
		}
		if dks != nil {
			gemm(true, false, s.L, s.D, s.L, scale, ds, s.L, q, ld, j.c[1], dks[off:], hd)
		}
	}
}

// softmaxGradRow turns dr, the gradient at a softmax row's output pr, into the gradient at its input:
// dr[j] = pr[j]·(dr[j] − Σ_l pr[l]·dr[l]) in float64. On the float32 backend with AVX-512 it is vec.SoftmaxGrad
// (the sum in Sum64's order), else the sum runs in l order.
func softmaxGradRow[T Float](pr, dr []T) {
	if p32, ok := any(pr).([]float32); ok && useAVX512 {
		vec.SoftmaxGrad(p32, any(dr).([]float32))
		return
	}
	var dot float64
	for j, pv := range pr {
		dot += float64(pv) * float64(dr[j])
	}
	for j, pv := range pr {
		dr[j] = T(float64(pv) * (float64(dr[j]) - dot))
	}
}

// bf16AttnScratch is the per-worker scratch of attention at bf16: four [L, D] operands and an [L, L] P.
func bf16AttnScratch(s ops.AttnShape) int { return 4*s.L*s.D + s.L*s.L }

// attnBF16 is one worker's scratch at bf16: ops[i] holds operand i (q, k, v, do) of the item in progress, rounded
// to bf16 and packed [L, D]; p its P rounded. Rounding per item keeps the copies per worker, not per tensor.
type attnBF16[T Float] struct {
	ops [4][]T
	p   []T
	l   int
	d   int
}

func newAttnBF16[T Float](buf []T, s ops.AttnShape) attnBF16[T] {
	n := s.L * s.D
	a := attnBF16[T]{l: s.L, d: s.D, p: buf[4*n : 4*n+s.L*s.L]}
	for i := range a.ops {
		a.ops[i] = buf[i*n : (i+1)*n]
	}
	return a
}

// round packs the item's [L, D] block of src (rows at off + i·ld) rounded to bf16 into operand slot i.
func (a attnBF16[T]) round(i int, src []T, off, ld int) []T {
	dst := a.ops[i]
	for r := 0; r < a.l; r++ {
		roundBF16To(dst[r*a.d:(r+1)*a.d], src[off+r*ld:off+r*ld+a.d])
	}
	return dst
}
