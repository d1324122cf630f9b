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

// reduce returns the float64 sum of job j's term (sumSquaresTerm or mseTerm) over its
// n = len(j.a[0]) elements, in the fixed blocked order above.
func (be *Backend[T]) reduce(j *job[T]) float64 {
	n := len(j.a[0])
	nb := (n + reduceBlock - 1) / reduceBlock
	be.sums = grow(be.sums, max(1, nb))
	j.sums[0] = be.sums[:max(1, nb)]
	if nb <= 1 {
		reduceBlock1(j, 0)
		return j.sums[0][0]
	}
	be.forEach(j, nb)
	var s float64
	for _, p := range j.sums[0] {
		s += p
	}
	return s
}

// reduceBlock1 stores block b's sum of the job's term in j.sums[0][b].
func reduceBlock1[T Float](j *job[T], b int) {
	lo, hi := b*reduceBlock, min(len(j.a[0]), (b+1)*reduceBlock)
	var s float64
	if j.kind == jSumSquares {
		for _, v := range j.a[0][lo:hi] {
			s += float64(v) * float64(v)
		}
	} else {
		as, bs := j.a[0][lo:hi], j.a[1][lo:hi]
		for i := range as {
			d := float64(as[i]) - float64(bs[i])
			s += d * d
		}
	}
	j.sums[0][b] = s
}

// SumSquares: out[0] = Σ x[i]², accumulated in float64 (see reduceBlock).
func (be *Backend[T]) SumSquares(x, out ops.Buf) {
	defer be.stop(FamOther, be.start())
	xs := be.buf("SumSquares", "x", x)
	os := arg(be, "SumSquares", lenShape{len(xs)}, "out", out, 1)
	j := be.newJob(jSumSquares)
	j.a[0] = xs
	os[0] = T(be.reduce(j))
}

type lenShape struct{ Len int }

// MSE: loss[0] = (1/n)·Σ (a[i] − b[i])², accumulated in float64 (see reduceBlock).
func (be *Backend[T]) MSE(a, b, loss ops.Buf) {
	defer be.stop(FamOther, be.start())
	s := be.same("MSE", "a, b", a, b)
	as, bs := s[0], s[1]
	if len(as) == 0 {
		panic("cpu MSE: empty operands")
	}
	ls := arg(be, "MSE", lenShape{len(as)}, "loss", loss, 1)
	j := be.newJob(jMSE)
	j.a[0], j.a[1] = as, bs
	ls[0] = T(be.reduce(j) / float64(len(as)))
}

// MSEBackward: da[i] += scale·2·(a[i] − b[i])/n, the factor 2·scale/n formed in float64.
func (be *Backend[T]) MSEBackward(scale float32, a, b, da ops.Buf) {
	defer be.stop(FamOther, be.start())
	s := be.same("MSEBackward", "a, b, da", a, b, da)
	as, bs, das := s[0], s[1], s[2]
	if len(as) == 0 {
		panic(fmt.Sprintf("cpu MSEBackward: empty operands"))
	}
	j := be.newJob(jMSEBwd)
	j.a[0], j.a[1], j.a[2], j.c[0] = as, bs, das, T(2*float64(scale)/float64(len(as)))
	be.parallel(j, len(as))
}

func mseBwdRange[T Float](j *job[T], lo, hi int) {
	as, bs, das, c := j.a[0][lo:hi], j.a[1][lo:hi], j.a[2][lo:hi], j.c[0]
	for i := range das {
		das[i] += c * (as[i] - bs[i])
	}
}
