package cuda

import (
	"fmt"
	"math"

	"github.com/ddpmgo/ddpm/ops"
)

// Launchers of kernels/attention.cu (row kernels) and the GEMM products of attention (be.gemm: gemm_f32, or gemm_bf16
// at precision bf16; the softmax kernels stay FP32 at every precision).

// attnRowsPerBlock is ATTN_ROWS_PER_BLOCK of kernels/attention.cu: one warp per row of L scores.
const attnRowsPerBlock = 4

func checkAttn(op string, s ops.AttnShape) {
	if s.N < 0 || s.L < 1 || s.Heads < 1 || s.D < 1 {
		panic(fmt.Sprintf("cuda %s %+v: invalid shape", op, s))
	}
	i32(op, s, s.N*s.L*s.Heads*s.D, s.N*s.Heads*s.L*s.L)
}

// Attention: per (sample n, head h), S = q_h·k_hᵀ/√D, P = softmax(S) row by row after subtracting the row maximum
// (saved in p [N, Heads, L, L]), o_h = P·v_h. Two GEMM launches around the softmax kernel.
func (be *Backend) Attention(s ops.AttnShape, q, k, v, o, p ops.Buf) {
	const op = "Attention"
	checkAttn(op, s)
	n := s.N * s.L * s.Heads * s.D
	qs := be.arg(op, s, "q", q, n)
	ks := be.arg(op, s, "k", k, n)
	vs := be.arg(op, s, "v", v, n)
	os := be.arg(op, s, "o", o, n)
	ps := be.arg(op, s, "p", p, s.N*s.Heads*s.L*s.L)
	if s.N == 0 {
		return
	}
	hd, ll := s.Heads*s.D, s.L*s.L
	scale := float32(1 / math.Sqrt(float64(s.D)))
	xS1, xS2, mS1, mS2 := s.L*hd, s.D, s.Heads*ll, ll // batch strides, as in AttentionBackward
	base := gemmCall{batch: s.N * s.Heads, zdiv: s.Heads}
	{ // S[i, j] = scale·Σ_d q[i, d]·k[j, d], into p
		g := base
		g.M, g.N, g.K, g.a, g.b, g.c, g.alpha = s.L, s.L, s.D, qs.p, ks.p, ps.p, scale
		g.aSM, g.aSK, g.aS1, g.aS2 = hd, 1, xS1, xS2
		g.bSK, g.bSN, g.bS1, g.bS2 = 1, hd, xS1, xS2
		g.cSM, g.cS1, g.cS2 = s.L, mS1, mS2
		be.gemm(op, g)
	}
	be.softmaxRows(op, "attention_softmax_f32", s, Ptr(ps.p))
	{ // o[i, d] = Σ_j P[i, j]·v[j, d]
		g := base
		g.M, g.N, g.K, g.a, g.b, g.c, g.alpha = s.L, s.D, s.L, ps.p, vs.p, os.p, 1
		g.aSM, g.aSK, g.aS1, g.aS2 = s.L, 1, mS1, mS2
		g.bSK, g.bSN, g.bS1, g.bS2 = hd, 1, xS1, xS2
		g.cSM, g.cS1, g.cS2 = hd, xS1, xS2
		be.gemm(op, g)
	}
}

func (be *Backend) softmaxRows(op, kernel string, s ops.AttnShape, args ...Arg) {
	rows := s.N * s.Heads * s.L
	args = append(args, I32(int32(rows)), I32(int32(s.L)))
	be.keep(op, be.d.Launch(kernel, Dim3{X: ceilDiv(rows, attnRowsPerBlock)}, Dim3{X: 32 * attnRowsPerBlock}, 0, args...))
}

// AttentionBackward accumulates, per (n, h), from the saved P:
//
//	dv += Pᵀ·do;  dP = do·vᵀ;  dS = P∘(dP − rowsum(P∘dP));  dq += dS·k/√D;  dk += dSᵀ·q/√D
//
// Any of dq, dk, dv may be nil; dP/dS live in scratch [N, Heads, L, L] and are skipped when dq and dk are nil. A
// gradient that is a waiting zero fill (fills.go) is stored rather than accumulated.
func (be *Backend) AttentionBackward(s ops.AttnShape, q, k, v, p, do, dq, dk, dv ops.Buf) {
	const op = "AttentionBackward"
	checkAttn(op, s)
	freshQ, freshK, freshV := be.takeZero(dq), be.takeZero(dk), be.takeZero(dv) // before buf launches the others
	n := s.N * s.L * s.Heads * s.D
	qs := be.arg(op, s, "q", q, n)
	ks := be.arg(op, s, "k", k, n)
	vs := be.arg(op, s, "v", v, n)
	ps := be.arg(op, s, "p", p, s.N*s.Heads*s.L*s.L)
	dos := be.arg(op, s, "do", do, n)
	dqs := be.opt(op, s, "dq", dq, n)
	dks := be.opt(op, s, "dk", dk, n)
	dvs := be.opt(op, s, "dv", dv, n)
	if s.N == 0 {
		return
	}
	hd, ll := s.Heads*s.D, s.L*s.L
	scale := float32(1 / math.Sqrt(float64(s.D)))
	// Batch strides of z = n·Heads + h: operands in [N, L, Heads·D] layout ("x": s1 = L·Heads·D, s2 = D) and in
	// [N, Heads, L, L] layout ("m": s1 = Heads·L·L, s2 = L·L).
	xS1, xS2, mS1, mS2 := s.L*hd, s.D, s.Heads*ll, ll
	base := gemmCall{batch: s.N * s.Heads, zdiv: s.Heads}
	if dvs != nil { // dv[j, d] += Σ_i P[i, j]·do[i, d]
		g := base
		g.M, g.N, g.K, g.a, g.b, g.c, g.alpha, g.acc = s.L, s.D, s.L, ps.p, dos.p, dvs.p, 1, !freshV
		g.aSM, g.aSK, g.aS1, g.aS2 = 1, s.L, mS1, mS2
		g.bSK, g.bSN, g.bS1, g.bS2 = hd, 1, xS1, xS2
		g.cSM, g.cS1, g.cS2 = hd, xS1, xS2
		be.gemm(op, g)
	}
	if dqs == nil && dks == nil {
		return
	}
	ds := be.scratch(op, s.N*s.Heads*ll)
	{ // dP[i, j] = Σ_d do[i, d]·v[j, d]
		g := base
		g.M, g.N, g.K, g.a, g.b, g.c, g.alpha = s.L, s.L, s.D, dos.p, vs.p, ds, 1
		g.aSM, g.aSK, g.aS1, g.aS2 = hd, 1, xS1, xS2
		g.bSK, g.bSN, g.bS1, g.bS2 = 1, hd, xS1, xS2
		g.cSM, g.cS1, g.cS2 = s.L, mS1, mS2
		be.gemm(op, g)
	}
	be.softmaxRows(op, "attention_softmax_bwd_f32", s, Ptr(ps.p), Ptr(ds))
	if dqs != nil { // dq[i, d] += scale·Σ_j dS[i, j]·k[j, d]
		g := base
		g.M, g.N, g.K, g.a, g.b, g.c, g.alpha, g.acc = s.L, s.D, s.L, ds, ks.p, dqs.p, scale, !freshQ
		g.aSM, g.aSK, g.aS1, g.aS2 = s.L, 1, mS1, mS2
		g.bSK, g.bSN, g.bS1, g.bS2 = hd, 1, xS1, xS2
		g.cSM, g.cS1, g.cS2 = hd, xS1, xS2
		be.gemm(op, g)
	}
	if dks != nil { // dk[j, d] += scale·Σ_i dS[i, j]·q[i, d]
		g := base
		g.M, g.N, g.K, g.a, g.b, g.c, g.alpha, g.acc = s.L, s.D, s.L, ds, qs.p, dks.p, scale, !freshK
		g.aSM, g.aSK, g.aS1, g.aS2 = 1, s.L, mS1, mS2
		g.bSK, g.bSN, g.bS1, g.bS2 = hd, 1, xS1, xS2
		g.cSM, g.cS1, g.cS2 = hd, xS1, xS2
		be.gemm(op, g)
	}
}
