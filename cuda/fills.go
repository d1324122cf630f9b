package cuda

import (
	"math"

	"github.com/ddpmgo/ddpm/ops"
)

// Deferred zero fills: the first backward op into a gradient buffer writes instead of accumulating.
//
// Backward ops accumulate (ops' convention), so the U-Net zeroes each gradient scratch buffer right before the op
// that produces it (model/layers.go, UNet.zero). Launched as asked, each of those fills is a memset -- 61 of the
// celeba32 step's launches at batch 64 -- whose zeros the op then reads back. So Fill(b, 0) is not launched at once:
// it waits here until the next call that touches device memory. An op that overwrites all of its output when told
// to takes its output's fill (takeZero: same address and length) and writes instead of adding to zeros; the
// results are those of the fill followed by the accumulation (0 + v = v, up to the sign of a zero). Every other
// access launches every waiting fill first, in the order they were asked for: buf (which each op's arguments pass
// through, so that also covers the other arguments of an op that took a fill), Sync, Free, Ptr, the step control's
// Read. Nothing can therefore observe that a fill waited, and no fill is lost.
//
// The ops that take a fill: Conv2DBackward's dx (backward-data stores instead of adding; conv2d.go),
// GroupNormSiLUBackward's / GroupNormBackward's dx (groupnorm.go), LinearBackward's dx (linear.go) and
// AttentionBackward's dq, dk, dv (attention.go).

// zeroFill is a Fill(b, 0) not yet launched: n float32 at p.
type zeroFill struct {
	p DevicePtr
	n int
}

// deferZero queues Fill(b, 0) of cb; a waiting fill that overlaps cb is launched first, so that the queue holds
// disjoint ranges.
func (be *Backend) deferZero(cb *Buf) {
	be.flushOverlapping(cb.p, cb.n)
	be.fills = append(be.fills, zeroFill{p: cb.p, n: cb.n})
}

// takeZero reports whether b (nil allowed) is exactly a waiting fill, and removes it from the queue: the caller
// must then write every element of b, and b must not be one of its inputs. It must be called before the op's
// arguments pass through buf, which launches the fills that remain.
func (be *Backend) takeZero(b ops.Buf) bool {
	cb, ok := b.(*Buf)
	if !ok || cb == nil {
		return false
	}
	for i, f := range be.fills {
		if f.p == cb.p && f.n == cb.n {
			be.fills = append(be.fills[:i], be.fills[i+1:]...)
			return true
		}
	}
	return false
}

// flushFills launches every waiting fill, in the order asked for.
func (be *Backend) flushFills() {
	if len(be.fills) == 0 {
		return
	}
	for _, f := range be.fills { // memset queues no fill: the slice stays as it is while this loop reads it
		be.memset("Fill", f.p, 0, f.n)
	}
	be.fills = be.fills[:0] // kept for the next fills: a step allocates nothing here
}

// flushOverlapping launches the waiting fills that overlap the n floats at p (and keeps the others waiting).
func (be *Backend) flushOverlapping(p DevicePtr, n int) {
	kept := be.fills[:0]
	for _, f := range be.fills {
		if f.p < p+DevicePtr(4*n) && p < f.p+DevicePtr(4*f.n) {
			be.memset("Fill", f.p, 0, f.n)
		} else {
			kept = append(kept, f)
		}
	}
	be.fills = kept
}

// memset launches the fill of n words at p with the 32-bit pattern of v.
func (be *Backend) memset(op string, p DevicePtr, v float32, n int) {
	be.keep(op, be.d.Memset32(p, math.Float32bits(v), n))
}
