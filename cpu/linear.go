package cpu

import (
	"fmt"

	"github.com/ddpmgo/ddpm/ops"
)

type linearShape struct{ N, In, Out int }

func checkLinear(op string, s linearShape) {
	if s.N < 0 || s.In < 1 || s.Out < 1 {
		panic(fmt.Sprintf("cpu %s %+v: invalid shape", op, s))
	}
}

// Linear: y[n,o] = b[o] + Σ_i x[n,i]·w[o,i], one GEMM y = x·wᵀ; b may be nil.
func (be *Backend[T]) Linear(n, in, out int, x, w, b, y ops.Buf) {
	defer be.stop(FamLinear, be.start())
	s := linearShape{n, in, out}
	checkLinear("Linear", s)
	xs := arg(be, "Linear", s, "x", x, n*in)
	ws := arg(be, "Linear", s, "w", w, out*in)
	bs := opt(be, "Linear", s, "b", b, out)
	ys := arg(be, "Linear", s, "y", y, n*out)
	switch {
	case n == 0:
	case be.mmBF16(): // y = bf16(x)·bf16(w)ᵀ on oneDNN's bf16 matmul (bf16.go)
		dnnlMatmulBF16(be.dn, mmKey{batch: 1, m: n, n: out, k: in, lda: in, transB: true, ldb: in, ldc: out,
			sa: n * in, sb: out * in, sc: n * out}, xs, ws, ys)
	default:
		gemm(false, true, n, out, in, 1, be.bf(0, xs), in, be.bf(1, ws), in, 0, ys, out) // float64 at bf16: rounded copies
	}
	if bs != nil {
		for r := 0; r < n; r++ {
			addTo(ys[r*out:(r+1)*out], bs)
		}
	}
}

// LinearBackward accumulates dx += dy·w, dw += dyᵀ·x and db[o] += Σ_n dy[n,o] (float64,
// increasing n). Any of dx, dw, db may be nil.
func (be *Backend[T]) LinearBackward(n, in, out int, x, w, dy, dx, dw, db ops.Buf) {
	defer be.stop(FamLinear, be.start())
	s := linearShape{n, in, out}
	checkLinear("LinearBackward", s)
	writeDx := n > 0 && be.takes(dx) // waiting zeros (fills.go): dx = … instead of +=
	xs := arg(be, "LinearBackward", s, "x", x, n*in)
	ws := arg(be, "LinearBackward", s, "w", w, out*in)
	dys := arg(be, "LinearBackward", s, "dy", dy, n*out)
	dxs := opt(be, "LinearBackward", s, "dx", dx, n*in)
	dws := opt(be, "LinearBackward", s, "dw", dw, out*in)
	dbs := opt(be, "LinearBackward", s, "db", db, out)
	if n == 0 {
		return
	}
	if be.mmBF16() { // dx += bf16(dy)·bf16(w), dw += bf16(dy)ᵀ·bf16(x) on oneDNN's bf16 matmul (bf16.go)
		if dxs != nil {
			dnnlMatmulBF16(be.dn, mmKey{batch: 1, m: n, n: in, k: out, lda: out, ldb: in, ldc: in,
				sa: n * out, sb: out * in, sc: n * in, acc: !writeDx}, dys, ws, dxs)
		}
		if dws != nil {
			dnnlMatmulBF16(be.dn, mmKey{batch: 1, m: out, n: in, k: n, transA: true, lda: out, ldb: in, ldc: in,
				sa: n * out, sb: n * in, sc: out * in, acc: true}, dys, xs, dws)
		}
	} else if dxs != nil || dws != nil {
		dyr := be.bf(2, dys) // bf16: rounded copies (bf16.go); db below sums the float32 dy
		if dxs != nil {
			beta := T(1)
			if writeDx {
				beta = 0
			}
			gemm(false, false, n, in, out, 1, dyr, out, be.bf(1, ws), in, beta, dxs, in)
		}
		if dws != nil {
			gemm(true, false, out, in, n, 1, dyr, out, be.bf(0, xs), in, 1, dws, in)
		}
	}
	if dbs != nil {
		for o := range dbs {
			var sum float64
			for r := 0; r < n; r++ {
				sum += float64(dys[r*out+o])
			}
			dbs[o] += T(sum)
		}
	}
}

// mmKey is a bf16 matmul plan's shape: C (m×n, row stride ldc) = op(A)·op(B) (+C where acc), A m×k and B k×n
// stored transposed where transA / transB (row strides lda, ldb), batch products whose buffers advance by sa, sb, sc.
type mmKey struct {
	batch, m, n, k int
	transA, transB bool
	lda, ldb, ldc  int
	sa, sb, sc     int
	acc            bool
}
