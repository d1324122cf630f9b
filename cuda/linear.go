package cuda

import (
	"fmt"

	"github.com/ddpmgo/ddpm/ops"
)

// Launchers of kernels/linear.cu and kernels/linear_bf16.cu: the strided batched GEMM (also used by attention.go)
// and Linear.

// gemmMaxZ is the largest grid z of a launch (CUDA's limit); longer batches are cut into several launches.
const gemmMaxZ = 65535

// gemmTile is GEMM_BM = GEMM_BN of kernels/gemm_tile.cuh (the output tile of one block) and gemmThreads its
// GEMM_THREADS.
const (
	gemmTile    = 64
	gemmThreads = 256
)

// gemmBF16Threads is GBF_THREADS of kernels/linear_bf16.cu (four warps) and gemmBF16Smem its GBF_SMEM, the dynamic
// shared memory of a block: two stages of the 64×32 bf16 tiles of A and B, rows padded to 20 words. Its output
// tile is gemmTile × gemmTile as well.
const (
	gemmBF16Threads = 128
	gemmBF16K       = 32 // GBF_BK, the k-step
	gemmBF16Smem    = 2 * (gemmTile + gemmTile) * 20 * 4
)

// gemmCall describes one gemm_f32 or gemm_bf16 launch (see kernels/linear.cu): for each batch index z < batch,
//
//	C_z[m, n] = alpha·Σ_k A_z[m, k]·B_z[k, n] + bias[n] + (acc ? C_z[m, n] : 0)
//
// with A_z[m, k] at a + off(z) + m·aSM + k·aSK, B_z[k, n] at b + off(z) + k·bSK + n·bSN, C_z[m, n] at
// c + off(z) + m·cSM + n, and off(z) = (z / zdiv)·s1 + (z % zdiv)·s2 per operand. Strides count elements.
type gemmCall struct {
	M, N, K            int
	a, b, c, bias      DevicePtr
	aSM, aSK, bSK, bSN int
	cSM                int
	batch, zdiv        int
	aS1, aS2, bS1, bS2 int
	cS1, cS2           int
	alpha              float32
	acc                bool
	act                int       // the fused SiLU of the epilogue (kernels/gemm_epi.cuh): 0 none, 1 forward, 2 backward
	ax, ay             DevicePtr // its input and output, in C's layout (batch 1 only)
}

// gemm launches gemm_f32, or at precision bf16 gemm_bf16 (A and B rounded to bfloat16 to nearest even, products on
// the tensor cores, FP32 sums and epilogue: the semantics of cpu/bf16.go for Linear and the attention products).
// At tf32 the GEMMs stay FP32: only the convolutions have TF32 kernels.
func (be *Backend) gemm(op string, g gemmCall) {
	if g.batch == 0 {
		g.batch = 1
	}
	if g.zdiv == 0 {
		g.zdiv = 1
	}
	if g.M == 0 || g.N == 0 {
		return
	}
	v := i32(op, g, g.M, g.N, g.K, g.aSM, g.aSK, g.bSK, g.bSN, g.cSM, g.zdiv, g.aS1, g.aS2, g.bS1, g.bS2, g.cS1, g.cS2)
	bf16 := be.Precision() == ops.BF16
	if bf16 { // gemm_bf16 forms A's and B's offsets in int32, up to the k-step past K (kernels/linear_bf16.cu)
		i32(op, g, (g.M-1)*g.aSM+(g.K+gemmBF16K)*g.aSK, (g.N-1)*g.bSN+(g.K+gemmBF16K)*g.bSK)
	}
	if g.act != 0 && g.batch != 1 {
		panic(fmt.Sprintf("cuda %s: a fused SiLU over a batch of %d GEMMs (one only)", op, g.batch))
	}
	chunk := gemmMaxZ / g.zdiv * g.zdiv // whole groups of zdiv, so that z / zdiv and z % zdiv stay right
	for z0 := 0; z0 < g.batch; z0 += chunk {
		nz := min(chunk, g.batch-z0)
		q := DevicePtr(4 * (z0 / g.zdiv))
		args := []Arg{Ptr(g.a + q*DevicePtr(g.aS1)), Ptr(g.b + q*DevicePtr(g.bS1)), Ptr(g.c + q*DevicePtr(g.cS1)),
			Ptr(g.bias)}
		for _, x := range v {
			args = append(args, I32(x))
		}
		args = append(args, F32(g.alpha), I32(b2i(g.acc)), Ptr(g.ax), Ptr(g.ay), I32(int32(g.act)))
		grid := Dim3{X: ceilDiv(g.N, gemmTile), Y: ceilDiv(g.M, gemmTile), Z: nz}
		if grid.Y > 65535 {
			panic(fmt.Sprintf("cuda %s: GEMM with %d rows exceeds the grid (%d row tiles > 65535)", op, g.M, grid.Y))
		}
		if bf16 {
			be.keep(op, be.d.Launch("gemm_bf16", grid, Dim3{X: gemmBF16Threads}, gemmBF16Smem, args...))
			continue
		}
		be.keep(op, be.d.Launch("gemm_f32", grid, Dim3{X: gemmThreads}, 0, args...))
	}
}

type linearShape struct{ N, In, Out int }

func checkLinear(op string, s linearShape) {
	if s.N < 0 || s.In < 1 || s.Out < 1 {
		panic(fmt.Sprintf("cuda %s %+v: invalid shape", op, s))
	}
	i32(op, s, s.N*s.In, s.N*s.Out, s.In*s.Out)
}

// Linear: y[n,o] = b[o] + Σ_i x[n,i]·w[o,i] (x [N, In], w [Out, In]), one GEMM y = x·wᵀ; b may be nil.
func (be *Backend) Linear(n, in, out int, x, w, b, y ops.Buf) {
	be.linear("Linear", n, in, out, x, w, b, y, nil)
}

// LinearSiLU (ops.LinearFuser) is Linear with a = SiLU(y) written by the GEMM's epilogue (kernels/gemm_epi.cuh), the
// values silu_fwd_f32 would write, one launch fewer.
func (be *Backend) LinearSiLU(n, in, out int, x, w, b, y, a ops.Buf) {
	be.linear("LinearSiLU", n, in, out, x, w, b, y, a)
}

var _ ops.LinearFuser = (*Backend)(nil)

func (be *Backend) linear(op string, n, in, out int, x, w, b, y, a ops.Buf) {
	s := linearShape{n, in, out}
	checkLinear(op, s)
	xs := be.arg(op, s, "x", x, n*in)
	ws := be.arg(op, s, "w", w, out*in)
	bs := be.opt(op, s, "b", b, out)
	ys := be.arg(op, s, "y", y, n*out)
	bp := DevicePtr(0)
	if bs != nil {
		bp = bs.p
	}
	g := gemmCall{M: n, N: out, K: in, a: xs.p, b: ws.p, c: ys.p, bias: bp, aSM: in, aSK: 1, bSK: 1, bSN: in,
		cSM: out, alpha: 1}
	if a != nil {
		as := be.arg(op, s, "a", a, n*out)
		if overlaps(as, ys) {
			panic(fmt.Sprintf("cuda %s %+v: a overlaps y", op, s))
		}
		g.act, g.ay = 1, as.p
	}
	be.gemm(op, g)
}

// LinearBackward accumulates dx += dy·w, dw += dyᵀ·x (two GEMMs) and db[o] += Σ_n dy[n,o] (in an order fixed by
// the shape: linearBiasGrad); any of dx, dw, db may be nil. A dx that is a waiting zero fill (fills.go) is stored
// rather than accumulated.
func (be *Backend) LinearBackward(n, in, out int, x, w, dy, dx, dw, db ops.Buf) {
	be.linearBackward("LinearBackward", n, in, out, x, w, dy, dx, dw, db, nil, nil)
}

// LinearBackwardSiLU (ops.LinearFuser) is LinearBackward with dh += dx·SiLU'(h) added by dx's GEMM epilogue
// (kernels/gemm_epi.cuh), the values silu_bwd_f32 would add, one launch fewer.
func (be *Backend) LinearBackwardSiLU(n, in, out int, x, w, dy, dx, dw, db, h, dh ops.Buf) {
	be.linearBackward("LinearBackwardSiLU", n, in, out, x, w, dy, dx, dw, db, h, dh)
}

func (be *Backend) linearBackward(op string, n, in, out int, x, w, dy, dx, dw, db, h, dh ops.Buf) {
	s := linearShape{n, in, out}
	checkLinear(op, s)
	freshDx := be.takeZero(dx) // dx is a waiting zero fill: store instead of adding (fills.go)
	xs := be.arg(op, s, "x", x, n*in)
	ws := be.arg(op, s, "w", w, out*in)
	dys := be.arg(op, s, "dy", dy, n*out)
	dxs := be.opt(op, s, "dx", dx, n*in)
	dws := be.opt(op, s, "dw", dw, out*in)
	dbs := be.opt(op, s, "db", db, out)
	var hs, dhs *Buf
	if h != nil {
		if dxs == nil {
			panic(fmt.Sprintf("cuda %s %+v: a fused SiLU backward without dx", op, s))
		}
		hs, dhs = be.arg(op, s, "h", h, n*in), be.arg(op, s, "dh", dh, n*in)
		if overlaps(dhs, dxs) || overlaps(dhs, hs) {
			panic(fmt.Sprintf("cuda %s %+v: dh overlaps dx or h", op, s))
		}
	}
	if n == 0 {
		return
	}
	if dxs != nil { // dx[r, i] += Σ_o dy[r, o]·w[o, i]
		g := gemmCall{M: n, N: in, K: out, a: dys.p, b: ws.p, c: dxs.p, aSM: out, aSK: 1, bSK: in, bSN: 1, cSM: in,
			alpha: 1, acc: !freshDx}
		if hs != nil {
			g.act, g.ax, g.ay = 2, hs.p, dhs.p
		}
		be.gemm(op, g)
	}
	if dws != nil { // dw[o, i] += Σ_r dy[r, o]·x[r, i]
		be.gemm(op, gemmCall{M: out, N: in, K: n, a: dys.p, b: xs.p, c: dws.p,
			aSM: 1, aSK: out, bSK: in, bSN: 1, cSM: in, alpha: 1, acc: true})
	}
	if dbs != nil {
		be.linearBiasGrad(op, n, out, dys.p, dbs.p)
	}
}

// The bias gradient's splits (kernels/linear.cu linear_bias_grad_f32): biasGradTarget is the number of blocks aimed
// at (two on each of an H100's 132 SMs); at most one split per biasGradMinRows rows (more than 128 rows a split, 16
// per warp); biasGradMaxSplits bounds the partials (splits × out floats of scratch). The splits depend on n and out
// only, and so do the sums.
const (
	biasGradTarget    = 264
	biasGradMinRows   = 256
	biasGradMaxSplits = 32
	biasGradThreads   = 256 // LBG_THREADS
)

// biasGradSplits is the number of row splits of a bias gradient over n rows and out columns, and the rows of each.
func biasGradSplits(n, out int) (splits, chunk int) {
	cols := ceilDiv(out, 32)
	splits = max(1, min(ceilDiv(biasGradTarget, cols), biasGradMaxSplits, ceilDiv(n, biasGradMinRows)))
	chunk = ceilDiv(n, splits)
	return ceilDiv(n, chunk), chunk
}

// linearBiasGrad launches db[o] += Σ_r dy[r, o]: linear_bias_grad_f32, its rows in one split when that gives
// enough blocks (or the rows are few), else in several whose partials (in scratch) the last block of each column
// block adds in split order (tickets; fewer column blocks than tickets whenever there are several splits).
func (be *Backend) linearBiasGrad(op string, n, out int, dy, db DevicePtr) {
	splits, chunk := biasGradSplits(n, out)
	part := DevicePtr(0)
	if splits > 1 {
		if cols := ceilDiv(out, 32); cols > ticketWords {
			panic(fmt.Sprintf("cuda %s: a split bias gradient of %d column blocks, more than the %d tickets", op, cols,
				ticketWords))
		}
		part = be.scratch(op, splits*out)
	}
	be.keep(op, be.d.Launch("linear_bias_grad_f32", Dim3{X: ceilDiv(out, 32), Y: splits}, Dim3{X: biasGradThreads}, 0,
		Ptr(dy), Ptr(db), Ptr(part), I32(int32(n)), I32(int32(out)), I32(int32(chunk)), Ptr(be.tickets)))
}
