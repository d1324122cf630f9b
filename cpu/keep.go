package cpu

import (
	"fmt"

	"github.com/ddpmgo/ddpm/ops"
)

// Kept convolution inputs (ops.ConvInputKeeper). At precision bf16 every pass of a convolution whose weight gradient
// takes bf16 inputs (BF16WeightGrad) reads x only as bf16: the forward and backward-weights primitives take it as
// NHWC bf16 (dnnl_layout.c's transpose of the float32 NCHW x, rounding to nearest even; oneDNN's reorder from it
// where a primitive wants a blocked layout), backward-data not at all. So x can be saved for the backward pass as
// that NHWC bf16 copy, half of its float32 bytes, and both passes read the copy instead of transposing x again: the
// results are those of the same calls on x, bit for bit (TestKeptConvInputBitExact). The U-Net keeps its SiLU
// outputs and upsampled activations so (model's keptIn), whose float32 forms then live in scratch.
//
// Where x is not kept (fp32; the float64 backend, whose bf16 reference rounds in Go; BF16WeightGrad false: the
// weight gradient reads the float32 x; Cin·H·W odd, which would not split into float32 elements per sample),
// KeptLen is 0 and the caller saves x as it is.

var _ ops.ConvInputKeeper = (*Backend[float32])(nil)

// keptX is x of convolution s kept by KeepConvInput: NHWC bf16, two to a float32 element of st.
type keptX[T Float] struct {
	s  ops.ConvShape
	st *Buf[T]
}

// Len is the storage's length.
func (k *keptX[T]) Len() int { return k.st.Len() }

// KeptLen is N·Cin·H·W/2 (NHWC bf16) where x of s is kept (see above), else 0.
func (be *Backend[T]) KeptLen(s ops.ConvShape) int {
	if be.dn == nil {
		return 0
	}
	return keptLen(be.prec, s)
}

// keptLen is the float32 backend's KeptLen at precision p.
func keptLen(p ops.Precision, s ops.ConvShape) int {
	if p != ops.BF16 || !BF16WeightGrad(s) || !layoutAvailable() || s.Cin*s.H*s.W%2 != 0 {
		return 0
	}
	return s.N * s.Cin * s.H * s.W / 2
}

// KeptLens is the float32 backend's KeptLen at precision P without a backend: what -dry-run counts.
type KeptLens struct{ P ops.Precision }

// KeptLen is KeptLen of a float32 backend at precision k.P.
func (k KeptLens) KeptLen(s ops.ConvShape) int { return keptLen(k.P, s) }

// HostKeptLens is KeptLens at a train.precision value, "auto" taken as bf16 where this CPU has AVX512-BF16 or AMX
// (what SetPrecision then accepts, unless oneDNN picks no bf16 kernel).
func HostKeptLens(precision string) KeptLens {
	if avx, amx := cpuBF16(); precision == "auto" && (avx || amx) {
		return KeptLens{ops.BF16}
	}
	return KeptLens{ops.Precision(precision)}
}

// KeepConvInput writes x as NHWC bf16 into kept.
func (be *Backend[T]) KeepConvInput(s ops.ConvShape, x, kept ops.Buf) {
	defer be.stop(FamConvFwd, be.start())
	checkConv("KeepConvInput", s)
	n := be.mustKeptLen("KeepConvInput", s)
	xs := arg(be, "KeepConvInput", s, "x", x, s.N*s.Cin*s.H*s.W)
	ks := arg(be, "KeepConvInput", s, "kept", kept, n)
	if s.N > 0 {
		dnnlKeep(be.dn, s, xs, ks)
	}
}

// Kept is kept as the x of the convolutions of shape s.
func (be *Backend[T]) Kept(s ops.ConvShape, kept ops.Buf) ops.Buf {
	checkConv("Kept", s)
	n := be.mustKeptLen("Kept", s)
	p := be.unwrap("Kept", "kept", kept)
	if p == nil {
		panic(fmt.Sprintf("cpu Kept %+v: kept is nil", s))
	}
	if p.Len() < n {
		panic(fmt.Sprintf("cpu Kept %+v: kept has %d elements, need %d", s, p.Len(), n))
	}
	return &keptX[T]{s: s, st: p}
}

// mustKeptLen is KeptLen(s), which must not be 0 for op.
func (be *Backend[T]) mustKeptLen(op string, s ops.ConvShape) int {
	n := be.KeptLen(s)
	if n == 0 {
		panic(fmt.Sprintf("cpu %s %+v: this backend keeps no x of this shape at precision %s (KeptLen is 0)", op, s, be.Precision()))
	}
	return n
}

// convX unwraps a convolution's x: a kept one (its NHWC bf16 storage, kept = true) or a float32 NCHW one.
func convX[T Float](be *Backend[T], op string, s ops.ConvShape, x ops.Buf) (xs []T, kept bool) {
	k, ok := x.(*keptX[T])
	if !ok {
		return arg(be, op, s, "x", x, s.N*s.Cin*s.H*s.W), false
	}
	if k.s != s {
		panic(fmt.Sprintf("cpu %s %+v: x was kept for shape %+v", op, s, k.s))
	}
	n := be.mustKeptLen(op, s)
	return arg(be, op, s, "x (kept)", k.st, n), true
}
