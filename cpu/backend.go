// Package cpu is the CPU twin of every op in ops.Backend: the fallback users train on
// without a GPU and the reference every CUDA kernel is tested against.
//
// One generic implementation serves two precisions: New gives the float32 backend that
// trains, New64 the float64 backend that the gradient checks and the conformance suite
// use as ground truth. Both store tensors as plain Go slices in row-major NCHW order.
//
// Speed. On the float32 backend, convolution (forward, backward-data, backward-weight
// and bias) goes to oneDNN through cgo, the library PyTorch's CPU convolutions use
// (dnnl.go). Everywhere else, GEMM-shaped work (convolution on the float64 backend as
// im2col + GEMM over multi-sample column panels, or as nine shifted GEMMs on a
// zero-padded grid for the forward and backward-data passes of 3×3 "same"
// convolutions on large images (convshift.go), linear, attention) goes to OpenBLAS
// through cgo (see blas.go for why).
// OpenBLAS is pinned to one thread and the backend parallelises itself on a persistent
// pool of worker goroutines (pool.go) over a fixed partition: per column panel for
// convolution, per batch chunk for its backward pass, per (sample, head) for attention,
// per (sample, group) for group norm, fixed ranges for elementwise ops and blocks for
// reductions. Every reduction that crosses a partition boundary (the batch sums of the
// weight and bias gradients, the sums of SumSquares and MSE) combines its partial sums
// in one fixed order, and the partition does not depend on the number of goroutines,
// so results are bit-identical run to run and for any GOMAXPROCS (oneDNN's
// convolutions: run to run for a fixed GOMAXPROCS; see dnnl.go). SiLU, long additions
// and group norm's passes run AVX-512 kernels (package internal/vec) where the CPU has
// them.
//
// Memory. Scratch (im2col panels, per-chunk weight-gradient partials, reduction
// partials) is owned by the backend, allocated on first use and only ever grown, and
// parallel ops hand the pool a job struct the backend owns (jobs.go) rather than a
// closure, so a steady-state training step allocates nothing. A Backend is therefore
// not safe for concurrent use by several goroutines; it is used like a CUDA stream, one
// op at a time.
//
// Profiling. SetProfile (or DDPM_CPU_PROFILE=1 in the environment) times every op by
// family; Profile().Table formats the result (profile.go, docs/perf.md).
package cpu

import (
	"fmt"
	"math"
	"runtime"

	"github.com/ddpmgo/ddpm/ops"
)

// Float is the element type of a backend.
type Float interface{ ~float32 | ~float64 }

// Buf is a host buffer: a slice of the backend's element type. Slice views share it.
type Buf[T Float] struct {
	data []T
	z    *zeroQueue // the waiting zero fills of the backend that made it (fills.go)
}

// Len is the number of elements.
func (b *Buf[T]) Len() int { return len(b.data) }

// Data returns the host memory behind a buffer of a Backend[T], without copying, so
// tests and the trainer can read and write it directly. It panics when b is not a
// *Buf[T] (a buffer of another backend or precision).
func Data[T Float](b ops.Buf) []T {
	p, ok := b.(*Buf[T])
	if !ok {
		var z T
		panic(fmt.Sprintf("cpu.Data[%T]: buffer is %T", z, b))
	}
	flush(p.z, p.data)
	return p.data
}

// Backend is the CPU op set over element type T. The zero value is not usable: call
// New or New64.
type Backend[T Float] struct {
	workers int // goroutines per parallel op (never changes a result, only the speed)

	// Scratch, grown on demand, never shrunk.
	cols    [][]T     // per worker: im2col columns of a panel [Cin·K·K, cols]
	ytmp    [][]T     // per worker: a multi-sample panel's y or dy [Cout, cols]
	partial [][]T     // per batch chunk: weight-gradient partials [Cout·Cin·K·K]
	dxgrid  [][]T     // per worker: the shifted-GEMM backward's dx on the input grid (convshift.go)
	wtap    []T       // the shifted-GEMM path's weights in tap order [K·K, Cout, Cin]
	sums    []float64 // reduction partials (one per block), group-norm per-(n,c) sums
	gnsilu  [][]T     // per worker: GroupNormSiLUBackward's n of a channel and gn of a group [(C/G + 1)·HW]
	attn    [][]T     // per worker: attention dP [L, L]
	attnG   [3][]T    // AttentionBackward's dq, dk, dv for its job
	dw      []T       // Conv2DBackward's dw for its job (nil when not wanted)

	dn *dnnlState // oneDNN convolution plans (float32 with cgo; nil: the GEMM path of conv.go)

	prec ops.Precision // SetPrecision's ("" is fp32); bf16: see bf16.go
	bfs  [4][]T        // bf16: rounded copies of an op's operands (bf16.go)
	bfw  [][]T         // bf16: per worker, attention's rounded P or dS [L, L]

	prof *profiler // per-op-family timer; nil when off (see SetProfile)

	zeros zeroQueue // Fill(b, 0) not yet done (fills.go)

	j       job[T]           // the parallel op in flight (see jobs.go)
	pool    *pool            // persistent worker goroutines (see pool.go)
	cleanup *runtime.Cleanup // ends the pool's helpers once the backend is unreachable
}

var (
	_ ops.Backend = (*Backend[float32])(nil)
	_ ops.Backend = (*Backend[float64])(nil)
)

// New returns the float32 backend, the one that trains.
func New() *Backend[float32] { return newBackend[float32]() }

// New64 returns the float64 backend, the reference for gradient checks and for the
// conformance suite. Upload and Download convert from and to float32.
func New64() *Backend[float64] { return newBackend[float64]() }

func newBackend[T Float]() *Backend[T] {
	blasInit()
	be := &Backend[T]{workers: max(1, runtime.GOMAXPROCS(0)), dn: newDNNL[T]()}
	be.SetProfile(profileFromEnv())
	return be
}

// Name is "cpu-float32" or "cpu-float64".
func (be *Backend[T]) Name() string {
	var z T
	return fmt.Sprintf("cpu-%T", z)
}

// buf unwraps an operand, clearing the waiting zero fills it overlaps (fills.go); nil stays nil. It panics when the
// buffer belongs to another backend or precision.
func (be *Backend[T]) buf(op, name string, b ops.Buf) []T {
	p := be.unwrap(op, name, b)
	if p == nil {
		return nil
	}
	flush(p.z, p.data)
	return p.data
}

// unwrap is buf without the clearing: for the ops that only look at the buffer or overwrite it whole.
func (be *Backend[T]) unwrap(op, name string, b ops.Buf) *Buf[T] {
	if b == nil {
		return nil
	}
	p, ok := b.(*Buf[T])
	if !ok {
		panic(fmt.Sprintf("cpu %s: %s is %T, not a buffer of %s", op, name, b, be.Name()))
	}
	return p
}

// arg unwraps a required operand of at least n elements and returns its first n. It is
// a function, generic in the shape type, so that the shape is boxed for the panic
// message only when there is one (a method taking `any` would allocate on every call).
func arg[T Float, S any](be *Backend[T], op string, shape S, name string, b ops.Buf, n int) []T {
	d := be.buf(op, name, b)
	if d == nil {
		panic(fmt.Sprintf("cpu %s %+v: %s is nil", op, shape, name))
	}
	if len(d) < n {
		panic(fmt.Sprintf("cpu %s %+v: %s has %d elements, need %d", op, shape, name, len(d), n))
	}
	return d[:n]
}

// opt is arg for an optional operand (a gradient that may not be needed): nil stays nil.
func opt[T Float, S any](be *Backend[T], op string, shape S, name string, b ops.Buf, n int) []T {
	if isNil(b) {
		return nil
	}
	return arg(be, op, shape, name, b, n)
}

// same unwraps up to four operands that must all have the length of the first (the ops
// whose length is the buffers' length); none may be nil.
func (be *Backend[T]) same(op string, names string, bs ...ops.Buf) [4][]T {
	var out [4][]T
	for i, b := range bs {
		out[i] = be.buf(op, names, b)
	}
	for i, b := range bs {
		if !isNil(b) && len(out[i]) == len(out[0]) {
			continue
		}
		lens := make([]int, len(bs))
		for j, b := range bs {
			lens[j] = -1
			if !isNil(b) {
				lens[j] = b.Len()
			}
		}
		panic(fmt.Sprintf("cpu %s: operands (%s) must have equal lengths, have %v (-1 = nil)", op, names, lens))
	}
	return out
}

func isNil(b ops.Buf) bool {
	if b == nil {
		return true
	}
	p, ok := b.(interface{ isNil() bool })
	return ok && p.isNil()
}

func (b *Buf[T]) isNil() bool { return b == nil }

// ---- memory ----

// Alloc returns a zero-filled buffer of n elements.
func (be *Backend[T]) Alloc(n int) ops.Buf {
	if n < 0 {
		panic(fmt.Sprintf("cpu Alloc: negative length %d", n))
	}
	return &Buf[T]{data: make([]T, n), z: &be.zeros}
}

// Slice returns the view [off, off+n) of b, sharing its storage. The view's capacity
// ends at off+n, so an op that overruns the view panics instead of writing past it.
func (be *Backend[T]) Slice(b ops.Buf, off, n int) ops.Buf {
	var v Buf[T] // a nil buffer's fields: no data, no fills
	if p := be.unwrap("Slice", "b", b); p != nil {
		v = *p
	}
	if off < 0 || n < 0 || off+n > len(v.data) {
		panic(fmt.Sprintf("cpu Slice: [%d, %d+%d) out of a buffer of %d elements", off, off, n, len(v.data)))
	}
	return &Buf[T]{data: v.data[off : off+n : off+n], z: v.z}
}

// Free drops the buffer's storage (the garbage collector reclaims it once no view
// refers to it); the buffer has length 0 afterwards.
func (be *Backend[T]) Free(b ops.Buf) {
	if isNil(b) {
		return
	}
	p := be.unwrap("Free", "b", b)
	if p.z != nil {
		p.z.mu.Lock()
		p.z.cut(rangeOf(p.data), nil)
		p.z.mu.Unlock()
	}
	p.data = nil
}

// Upload copies src into dst (same length), converting float32 to T.
func (be *Backend[T]) Upload(dst ops.Buf, src []float32) {
	d := be.buf("Upload", "dst", dst)
	if len(d) != len(src) {
		panic(fmt.Sprintf("cpu Upload: dst has %d elements, src %d", len(d), len(src)))
	}
	if f, ok := any(d).([]float32); ok {
		copy(f, src)
		return
	}
	for i, v := range src {
		d[i] = T(v)
	}
}

// Download copies src into dst (same length), converting T to float32 (rounding to
// nearest for float64).
func (be *Backend[T]) Download(dst []float32, src ops.Buf) {
	s := be.buf("Download", "src", src)
	if len(s) != len(dst) {
		panic(fmt.Sprintf("cpu Download: src has %d elements, dst %d", len(s), len(dst)))
	}
	for i, v := range s {
		dst[i] = float32(v)
	}
}

// Fill sets every element to v; a large fill with +0 waits for the buffer's next use (fills.go).
func (be *Backend[T]) Fill(b ops.Buf, v float32) {
	defer be.stop(FamOther, be.start())
	if p := be.unwrap("Fill", "b", b); p != nil && p.z == &be.zeros && len(p.data) >= deferMin &&
		v == 0 && !math.Signbit(float64(v)) {
		be.deferZero(p.data)
		return
	}
	d := be.buf("Fill", "b", b)
	j := be.newJob(jFill)
	j.a[0], j.c[0] = d, T(v)
	be.parallel(j, len(d))
}

func fillRange[T Float](j *job[T], lo, hi int) {
	d, x := j.a[0][lo:hi], j.c[0]
	if x == 0 && !math.Signbit(float64(x)) { // the common case (zeroing gradients): memclr
		clear(d)
		return
	}
	for i := range d {
		d[i] = x
	}
}

// Copy copies src into dst; both have the same length.
func (be *Backend[T]) Copy(dst, src ops.Buf) {
	defer be.stop(FamOther, be.start())
	d, s := be.buf("Copy", "dst", dst), be.buf("Copy", "src", src)
	if len(d) != len(s) {
		panic(fmt.Sprintf("cpu Copy: dst has %d elements, src %d", len(d), len(s)))
	}
	copy(d, s)
}

// Sync returns nil: every CPU op has finished when it returns.
func (be *Backend[T]) Sync() error { return nil }

// ---- parallel helpers ----

// parallelMin is the length below which an elementwise op runs on the calling
// goroutine: under ~64k elements the op costs less than waking a second goroutine.
const parallelMin = 1 << 16

// grow returns s resized to n elements, reallocating only when it is too small. The
// contents are unspecified.
func grow[E any](s []E, n int) []E {
	if cap(s) < n {
		return make([]E, n)
	}
	return s[:n]
}

// scratch returns count scratch slices of n elements each (contents unspecified).
func scratch[T Float](set *[][]T, count, n int) [][]T {
	if len(*set) < count {
		*set = append(*set, make([][]T, count-len(*set))...)
	}
	for i := range (*set)[:count] {
		(*set)[i] = grow((*set)[i], n)
	}
	return (*set)[:count]
}
