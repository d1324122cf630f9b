package cuda

import (
	"fmt"

	"github.com/ddpmgo/ddpm/ops"
)

// Kept convolution inputs (ops.ConvInputKeeper). At precision bf16 the forward pass packs x (NCHW float32) into
// padded NHWC bfloat16, xp [N][hp][wp][cinP] (conv2d_pack_act_bf16, rounding to nearest even; the halo of P before
// and P + PadEnd after, and the channels past Cin, zeros), and backward-weight packs it again, with wcp = wgradCp(cinP)
// channels; backward-data does not read x. Where the two layouts are the same (cinP a multiple of 64: 49 to 64, 113
// to 128, … input channels, at any kernel size), xp can be saved for the backward pass instead of x, about half of
// its bytes (the halo adds hp·wp/(H·W) − 1 of it: 13% at 32x32 with P = 1), and both passes read it instead of
// packing x: one launch of the same packing (KeepConvInput) writes it into storage of the caller's (a slice of the
// model's workspace), and the GEMMs read it there. The results are those of the same calls on x, bit for bit
// (keep_emu_test.go): the kernels read the same bytes, only from another address.
//
// Where x is not kept (fp32 and tf32, whose packed x is float32; bf16 with cinP ≠ wcp, e.g. 3 or 32 input channels,
// where forward and backward-weight read different layouts; images so small that xp, halo and slack included, is
// no smaller than x, e.g. 4×4 with P = 1), KeptLen is 0 and the caller saves x as it is.
//
// The storage holds more than xp: the packing writes convSlack bfloat16 zeros after the operand (CONV_SLACK of
// kernels/conv2d.cu), and xp must start 16-byte aligned (the kernels' cp.async chunks) while a slice of a workspace
// need not (ops.Buf offsets are in 4-byte elements). So xp starts at the first 16-byte boundary of the storage
// (keptBase) and each sample's length has keptExtra elements more: linear in N, and for N ≥ 1 room for both.

var _ ops.ConvInputKeeper = (*Backend)(nil)

// keptExtra is the storage per sample beyond xp's, in float32 elements: the pack's slack (convSlack bfloat16) and
// up to 12 bytes of alignment, rounded to 16 bytes.
const keptExtra = (convSlack*2 + 16) / 4

// keptX is x of convolution s kept at precision prec by KeepConvInput: xp (bfloat16, two to a float32 element of st)
// from keptBase(st).
type keptX struct {
	s    ops.ConvShape
	prec ops.Precision
	st   *Buf
}

// Len is the storage's length.
func (k *keptX) Len() int { return k.st.n }

// KeptLen is N·(hp·wp·cinP/2 + keptExtra) where x of s is kept at the current precision (see above), else 0.
func (be *Backend) KeptLen(s ops.ConvShape) int { return keptLen(s, be.Precision()) }

// keptLen is KeptLen at precision p: nonzero only for BF16 where forward and backward-weight pack x alike (cinP =
// wgradCp(cinP); both GEMMs on the tensor-core path, packElem 2).
func keptLen(s ops.ConvShape, p ops.Precision) int {
	if p != ops.BF16 || s.N < 0 || s.Cin < 1 || s.K < 1 {
		return 0
	}
	g := geomOf(s, p)
	if wgradCp(g.cinP, p) != g.cinP || !tensorPrec(p) {
		return 0
	}
	per := g.hp*g.wp*g.cinP*packElem(p)/4 + keptExtra // cinP is a multiple of 64: whole float32 elements
	if per >= s.Cin*s.H*s.W {                         // no fewer bytes than x itself: small images, where the halo outweighs bf16's half
		return 0
	}
	return s.N * per
}

// keptBase is the address of xp in kept storage st: its first 16-byte boundary.
func keptBase(st *Buf) DevicePtr { return (st.p + 15) &^ 15 }

// mustKeptLen is KeptLen(s), which must not be 0 for op.
func (be *Backend) mustKeptLen(op string, s ops.ConvShape) int {
	n := be.KeptLen(s)
	if n == 0 {
		panic(fmt.Sprintf("cuda %s %+v: this backend keeps no x of this shape at precision %s (KeptLen is 0)", op, s,
			be.Precision()))
	}
	return n
}

// KeepConvInput packs x into kept as the forward pass would pack it (conv2d_pack_act_bf16, every element of xp
// written, the halo's and the padding channels' zeros included, and the slack after it).
func (be *Backend) KeepConvInput(s ops.ConvShape, x, kept ops.Buf) {
	const op = "KeepConvInput"
	checkConv(op, s, be.Precision())
	n := be.mustKeptLen(op, s)
	xs := be.arg(op, s, "x", x, s.N*s.Cin*s.H*s.W)
	ks := be.arg(op, s, "kept", kept, n)
	if overlaps(xs, ks) {
		panic(fmt.Sprintf("cuda %s %+v: kept overlaps x", op, s))
	}
	if s.N == 0 {
		return
	}
	g := geomOf(s, be.Precision())
	be.packActs(op, s.N, []packJob{{xs.p, keptBase(ks), s.Cin, s.H, s.W, g.cinP, g.hp, g.wp, s.Pad, 1}}, 0, 0, 0, 0)
}

// Kept is kept as the x of the convolutions of shape s at the current precision.
func (be *Backend) Kept(s ops.ConvShape, kept ops.Buf) ops.Buf {
	const op = "Kept"
	checkConv(op, s, be.Precision())
	n := be.mustKeptLen(op, s)
	cb := be.unwrap(op, "kept", kept) // touches no memory: a waiting fill stays waiting
	if cb.n != n {
		panic(fmt.Sprintf("cuda %s %+v: kept has %d elements, want %d", op, s, cb.n, n))
	}
	return &keptX{s: s, prec: be.Precision(), st: cb}
}

// convX is the address of a convolution's x: a kept one's xp (kept = true), or the float32 NCHW x.
func (be *Backend) convX(op string, s ops.ConvShape, x ops.Buf) (p DevicePtr, kept bool) {
	k, ok := x.(*keptX)
	if !ok {
		return be.arg(op, s, "x", x, s.N*s.Cin*s.H*s.W).p, false
	}
	if k.s != s {
		panic(fmt.Sprintf("cuda %s %+v: x was kept for shape %+v", op, s, k.s))
	}
	if k.prec != be.Precision() {
		panic(fmt.Sprintf("cuda %s %+v: x was kept at precision %s, the backend is at %s now", op, s, k.prec,
			be.Precision()))
	}
	n := be.mustKeptLen(op, s)
	return keptBase(be.arg(op, s, "x (kept)", k.st, n)), true
}
