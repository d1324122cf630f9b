package cuda

import (
	"fmt"

	"github.com/ddpmgo/ddpm/ops"
)

// Launchers of kernels/reduce.cu.

// reduceThreads must equal REDUCE_THREADS in kernels/reduce.cu; reduceMaxBlocks bounds pass 1's grid (and the
// partial-sum scratch).
const (
	reduceThreads   = 256
	reduceMaxBlocks = 1024
)

// Reduction modes of reduce_partial_f32 (kernels/reduce.cu). The mode is a launch argument, so its value appears in
// train/testdata/launches_tiny_step.golden.
const (
	reduceSumSquares  = 1
	reduceSquaredDiff = 2
)

// reduceGrid is pass 1's block count, a function of n alone: that is what makes the result deterministic.
func reduceGrid(n int) int { return max(1, min((n+reduceThreads-1)/reduceThreads, reduceMaxBlocks)) }

// reduce writes out[0] = scale·Σ term(i) over n elements (term by mode), in two fixed-order passes of one launch
// (the second by the last block to finish, with a ticket).
func (be *Backend) reduce(op string, mode int, a, b *Buf, n int, scale float64, out *Buf) {
	g := reduceGrid(n)
	bp := a.p
	if b != nil {
		bp = b.p
	}
	be.keep(op, be.d.Launch("reduce_partial_f32", Dim3{X: g}, Dim3{X: reduceThreads}, 0,
		Ptr(a.p), Ptr(bp), Ptr(be.partial), I64(int64(n)), I32(int32(mode)), F64(scale), Ptr(out.p), Ptr(be.tickets)))
}

func (be *Backend) scalarOut(op string, out ops.Buf) *Buf {
	o := be.buf(op, "out", out)
	if o.n != 1 {
		panic(fmt.Sprintf("cuda %s: out has %d elements, want 1", op, o.n))
	}
	return o
}

// SumSquares: out[0] = Σ x[i]² (the squared global norm), accumulated in float64 in a fixed order.
func (be *Backend) SumSquares(x, out ops.Buf) {
	xs := be.buf("SumSquares", "x", x)
	be.reduce("SumSquares", reduceSumSquares, xs, nil, xs.n, 1, be.scalarOut("SumSquares", out))
}

// MSE: loss[0] = (1/n)·Σ (a[i] − b[i])², accumulated in float64 in a fixed order.
func (be *Backend) MSE(a, b, loss ops.Buf) {
	s := be.bufs("MSE", a.Len(), []string{"a", "b"}, a, b)
	if s[0].n == 0 {
		panic("cuda MSE: empty operands")
	}
	be.reduce("MSE", reduceSquaredDiff, s[0], s[1], s[0].n, 1/float64(s[0].n), be.scalarOut("MSE", loss))
}

// MSEBackward: da[i] += scale·2·(a[i] − b[i])/n, the factor formed in float64. A da that is a waiting zero fill
// (fills.go) is stored rather than accumulated.
func (be *Backend) MSEBackward(scale float32, a, b, da ops.Buf) {
	fresh := be.takeZero(da)
	s := be.bufs("MSEBackward", a.Len(), []string{"a", "b", "da"}, a, b, da)
	if s[0].n == 0 {
		panic("cuda MSEBackward: empty operands")
	}
	c := float32(2 * float64(scale) / float64(s[0].n))
	be.launch1D("MSEBackward", "mse_bwd_f32", s[0].n, Ptr(s[0].p), Ptr(s[1].p), Ptr(s[2].p), F32(c), I64(int64(s[0].n)),
		I32(b2i(!fresh)))
}
