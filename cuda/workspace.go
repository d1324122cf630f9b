package cuda

import (
	"fmt"
	"math"

	"github.com/ddpmgo/ddpm/ops"
)

// The launchers of this package cover the whole op set.
var _ ops.Backend = (*Backend)(nil)

// Helpers of the launchers of conv2d.go, groupnorm.go, linear.go, attention.go and the layout ops.

// workspace is grow-only device scratch for launchers that need temporaries: the split-K partials of the
// convolution's weight gradient, group norm's per-channel sums, attention's dP/dS. One buffer serves all of them:
// launches run in stream order, so a launcher's temporaries are dead once its last kernel has run, and the next
// launcher's kernels cannot start earlier.
type workspace struct {
	p     DevicePtr
	bytes int
}

// scratch returns device memory for floats float32 values, valid until the next launcher that asks for scratch.
func (be *Backend) scratch(op string, floats int) DevicePtr {
	need := 4 * max(floats, 1)
	if need <= be.ws.bytes {
		return be.ws.p
	}
	if be.ws.p != 0 {
		// Queued kernels may still read the old buffer: wait for them before freeing it.
		be.keep(op, be.d.Sync())
		be.keep(op, be.d.Free(be.ws.p))
		be.ws = workspace{}
	}
	size := max(need, 2*be.ws.bytes, 1<<20)
	p, err := be.d.Alloc(size)
	if err != nil {
		panic(&ops.DeviceError{Op: fmt.Sprintf("cuda %s: scratch of %d bytes", op, size), Err: err})
	}
	be.ws = workspace{p: p, bytes: size}
	return p
}

// FreeScratch releases the launchers' scratch memory (it is allocated again when needed).
func (be *Backend) FreeScratch() error {
	if be.ws.p == 0 {
		return nil
	}
	err := be.d.Free(be.ws.p)
	be.ws = workspace{}
	return err
}

// arg unwraps a required buffer of n elements; shape is printed in the panic message.
func (be *Backend) arg(op string, shape any, name string, b ops.Buf, n int) *Buf {
	if b == nil {
		panic(fmt.Sprintf("cuda %s %+v: %s is nil", op, shape, name))
	}
	cb := be.buf(op, name, b)
	if cb.n != n {
		panic(fmt.Sprintf("cuda %s %+v: %s has %d elements, want %d", op, shape, name, cb.n, n))
	}
	return cb
}

// opt is arg for a buffer that may be nil (an optional bias or gradient); it returns nil then.
func (be *Backend) opt(op string, shape any, name string, b ops.Buf, n int) *Buf {
	if b == nil {
		return nil
	}
	if cb, ok := b.(*Buf); ok && cb == nil {
		return nil
	}
	return be.arg(op, shape, name, b, n)
}

// ptr is b's device address, or the null pointer for a nil b.
func ptr(b *Buf) Arg {
	if b == nil {
		return Ptr(0)
	}
	return Ptr(b.p)
}

// i32 converts sizes that the kernels take as C int, panicking (with op and shape) when one does not fit, or is
// negative. Products used as int inside a kernel must be passed through here too.
func i32(op string, shape any, vs ...int) []int32 {
	out := make([]int32, len(vs))
	for i, v := range vs {
		if v < 0 || v > math.MaxInt32 {
			panic(fmt.Sprintf("cuda %s %+v: size %d is negative or does not fit the kernels' int32", op, shape, v))
		}
		out[i] = int32(v)
	}
	return out
}

// ceilDiv is ⌈a/b⌉ for a ≥ 0, b > 0.
func ceilDiv(a, b int) int { return (a + b - 1) / b }

// gridStride launches a grid-stride kernel of `threads` threads per block over n elements (a no-op for n = 0).
func (be *Backend) gridStride(op, kernel string, n, threads int, args ...Arg) {
	if n == 0 {
		return
	}
	blocks := min(ceilDiv(n, threads), elementwiseMaxBlocks)
	be.keep(op, be.d.Launch(kernel, Dim3{X: blocks}, Dim3{X: threads}, 0, args...))
}

// overlaps reports whether two buffers share device memory.
func overlaps(a, b *Buf) bool {
	return a.p < b.p+DevicePtr(4*b.n) && b.p < a.p+DevicePtr(4*a.n)
}
