package cpu

import (
	"fmt"

	"github.com/ddpmgo/ddpm/ops"
)

// reduceBlock is the fixed block of the float64 reductions: block b sums elements
// [b·reduceBlock, (b+1)·reduceBlock) in increasing order, and the block sums are added
// in block order. The blocks, not the goroutines, fix the order, so the result is the
// same for any number of workers.
const reduceBlock = 1 << 14

// reduce returns Σ_i term(i) over [0, n) in float64, in the fixed blocked order above.
func (be *Backend[T]) reduce(n int, term func(lo, hi int) float64) float64 {
	nb := (n + reduceBlock - 1) / reduceBlock
	if nb <= 1 {
		return term(0, n)
	}
	be.sums = grow(be.sums, nb)
	parts := be.sums[:nb]
	be.forEach(nb, func(_, b int) {
		parts[b] = term(b*reduceBlock, min(n, (b+1)*reduceBlock))
	})
	var s float64
	for _, p := range parts {
		s += p
	}
	return s
}

// SumSquares: out[0] = Σ x[i]², accumulated in float64 (see reduceBlock).
func (be *Backend[T]) SumSquares(x, out ops.Buf) {
	xs := be.buf("SumSquares", "x", x)
	os := be.arg("SumSquares", struct{ Len int }{len(xs)}, "out", out, 1)
	os[0] = T(be.reduce(len(xs), func(lo, hi int) float64 {
		var s float64
		for _, v := range xs[lo:hi] {
			s += float64(v) * float64(v)
		}
		return s
	}))
}

// MSE: loss[0] = (1/n)·Σ (a[i] − b[i])², accumulated in float64 (see reduceBlock).
func (be *Backend[T]) MSE(a, b, loss ops.Buf) {
	s := be.same("MSE", "a, b", a, b)
	as, bs := s[0], s[1]
	if len(as) == 0 {
		panic("cpu MSE: empty operands")
	}
	ls := be.arg("MSE", struct{ Len int }{len(as)}, "loss", loss, 1)
	sum := be.reduce(len(as), func(lo, hi int) float64 {
		var s float64
		for i := lo; i < hi; i++ {
			d := float64(as[i]) - float64(bs[i])
			s += d * d
		}
		return s
	})
	ls[0] = T(sum / float64(len(as)))
}

// MSEBackward: da[i] += scale·2·(a[i] − b[i])/n, the factor 2·scale/n formed in float64.
func (be *Backend[T]) MSEBackward(scale float32, a, b, da ops.Buf) {
	s := be.same("MSEBackward", "a, b, da", a, b, da)
	as, bs, das := s[0], s[1], s[2]
	if len(as) == 0 {
		panic(fmt.Sprintf("cpu MSEBackward: empty operands"))
	}
	c := T(2 * float64(scale) / float64(len(as)))
	be.parallel(len(as), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			das[i] += c * (as[i] - bs[i])
		}
	})
}
