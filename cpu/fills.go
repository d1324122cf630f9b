package cpu

import (
	"sync"
	"unsafe"

	"github.com/ddpmgo/ddpm/ops"
)

// Deferred zero fills: the first backward op into a gradient buffer writes instead of accumulating (the CPU twin of
// package cuda's fills.go).
//
// Backward ops accumulate (ops' convention), so the U-Net zeroes its activation gradients before the backward pass
// (one Fill of all of them, 409 MiB for celeba32 at batch 64) and each scratch gradient right before the op that
// produces it (UNet.zero): memory written with zeros and read back by the accumulation, ~4 % of a bf16 step. So
// Fill(b, 0) of a large buffer is not done at once: it waits in the backend's zeroQueue. An op that overwrites all of
// an output when told to takes that output's zeros (takeZero: the output lies within one waiting fill) and writes
// instead of adding to zeros; the results are those of the fill followed by the accumulation (0 + v = v, up to the
// sign of a zero). Every other access clears the waiting zeros it overlaps first, and only those: buf (which each
// op's operands pass through, so that also covers the other operands of an op that took a fill), Data (the trainer's
// and the MPI collective's direct reads), Free. Nothing can therefore observe that a fill waited, and no fill is lost.
//
// The ops that take a fill: Conv2DBackward's dx where oneDNN's backward-data output comes back through
// dnnl_layout.c's transpose (which can write or add), ConcatBackward's da and db (copies instead of additions),
// Upsample2xBackward's dx, LinearBackward's dx (β = 0, or oneDNN's matmul without its sum post-op),
// AttentionBackward's dq, dk, dv (β = 0), GroupNorm(SiLU)Backward's dx, Axpy's y (which a residual's gradient
// goes through first, ops.GroupNorm(SiLU)BackwardRes).

// deferMin is the smallest fill that waits (in elements): below it the bookkeeping costs more than the zeros.
const deferMin = 1 << 14

// zeroQueue holds a backend's waiting zero fills as disjoint byte ranges [lo, hi) of host memory. Its mutex lets
// Data run on another goroutine than the backend's ops (the MPI collective reads finished gradients while the
// backward pass goes on).
type zeroQueue struct {
	mu    sync.Mutex
	spans []span
	spare []span // cut's other slice, so that a step allocates nothing here
}

// A fill that nothing ever touches again waits, and keeps its buffer's memory, until the backend is dropped: filling
// a buffer with zeros and then dropping it unread is the only way to get there.

// span is n bytes at p. It holds a pointer, not an address, so that a waiting fill keeps its memory alive: were the
// buffer dropped and its memory reused by another, clearing the fill would write into that one.
type span struct {
	p unsafe.Pointer
	n uintptr
}

func (s span) lo() uintptr { return uintptr(s.p) }
func (s span) hi() uintptr { return uintptr(s.p) + s.n }

// sub is the part [lo, hi) of s (addresses within it).
func (s span) sub(lo, hi uintptr) span { return span{unsafe.Add(s.p, lo-s.lo()), hi - lo} }

// rangeOf is the bytes of d (empty for an empty slice).
func rangeOf[T Float](d []T) span {
	if len(d) == 0 {
		return span{}
	}
	return span{unsafe.Pointer(&d[0]), uintptr(len(d)) * unsafe.Sizeof(d[0])}
}

// cut removes r from the waiting spans, calling clr on each part of a span that r overlaps (nil: drop it).
func (q *zeroQueue) cut(r span, clr func(span)) {
	if r.n == 0 || len(q.spans) == 0 {
		return
	}
	kept := q.spare[:0]
	changed := false
	for _, s := range q.spans {
		if s.hi() <= r.lo() || r.hi() <= s.lo() {
			kept = append(kept, s)
			continue
		}
		changed = true
		lo, hi := max(s.lo(), r.lo()), min(s.hi(), r.hi())
		if clr != nil {
			clr(s.sub(lo, hi))
		}
		if s.lo() < lo {
			kept = append(kept, s.sub(s.lo(), lo))
		}
		if hi < s.hi() {
			kept = append(kept, s.sub(hi, s.hi()))
		}
	}
	if changed {
		q.spans, q.spare = kept, q.spans
	}
}

// clearSpan writes zeros over s, which holds elements of type T.
func clearSpan[T Float](s span) {
	var z T
	clear(unsafe.Slice((*T)(s.p), s.n/unsafe.Sizeof(z)))
}

// flush clears the waiting zeros that d overlaps (the access that follows sees them).
func flush[T Float](q *zeroQueue, d []T) {
	if q == nil {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.cut(rangeOf(d), clearSpan[T])
}

// deferZero makes Fill(d, 0) wait: d's range joins the queue (replacing the waiting parts it covers, which it zeroes
// anyway).
func (be *Backend[T]) deferZero(d []T) {
	q := &be.zeros
	q.mu.Lock()
	defer q.mu.Unlock()
	r := rangeOf(d)
	q.cut(r, nil)
	q.spans = append(q.spans, r)
}

// takes is takeZero for an operand as the op receives it (nil, or a buffer of another backend: false).
func (be *Backend[T]) takes(b ops.Buf) bool {
	p, ok := b.(*Buf[T])
	return ok && be.takeZero(p)
}

// takeZero reports whether b (nil allowed) lies within one waiting fill, and then removes its range from the queue:
// the caller must write every element of b, and b must not be one of its inputs. It must be called before b passes
// through buf, which would clear the zeros.
func (be *Backend[T]) takeZero(b *Buf[T]) bool {
	if b == nil || len(b.data) == 0 {
		return false
	}
	r := rangeOf(b.data)
	q := &be.zeros
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, s := range q.spans {
		if s.lo() <= r.lo() && r.hi() <= s.hi() {
			q.cut(r, nil)
			return true
		}
	}
	return false
}
