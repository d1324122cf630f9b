// Package cpu is the CPU twin of every op in ops.Backend: the fallback users train on
// without a GPU and the reference every CUDA kernel is tested against.
//
// One generic implementation serves two precisions: New gives the float32 backend that
// trains, New64 the float64 backend that the gradient checks and the conformance suite
// use as ground truth. Both store tensors as plain Go slices in row-major NCHW order.
//
// Speed. GEMM-shaped work (convolution as im2col + GEMM, linear, attention) goes to
// OpenBLAS through cgo (see blas.go for why). OpenBLAS is pinned to one thread and the
// backend parallelises itself over goroutines with a fixed partition: per sample for
// convolution, per (sample, head) for attention, fixed-size blocks for elementwise ops
// and reductions. Every reduction that crosses a partition boundary (the batch sums of
// the weight and bias gradients, the sums of SumSquares and MSE) combines its partial
// sums in one fixed order, and the partition does not depend on the number of
// goroutines, so results are bit-identical run to run and for any GOMAXPROCS.
//
// Memory. Scratch (im2col columns, per-chunk weight-gradient partials, reduction
// partials) is owned by the backend, allocated on first use and only ever grown, so a
// steady-state training step allocates no buffers. A Backend is therefore not safe for
// concurrent use by several goroutines; it is used like a CUDA stream, one op at a time.
package cpu

import (
	"fmt"
	"runtime"
	"sync"

	"github.com/ddpmgo/ddpm/ops"
)

// Float is the element type of a backend.
type Float interface{ ~float32 | ~float64 }

// Buf is a host buffer: a slice of the backend's element type. Slice views share it.
type Buf[T Float] struct {
	data []T
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
	return p.data
}

// Backend is the CPU op set over element type T. The zero value is not usable: call
// New or New64.
type Backend[T Float] struct {
	workers int // goroutines per parallel op (never changes a result, only the speed)

	// Scratch, grown on demand, never shrunk.
	cols    [][]T     // per worker: im2col columns [Cin·K·K, OH·OW]
	partial [][]T     // per batch chunk ≥ 1: weight-gradient partials [Cout·Cin·K·K]
	sums    []float64 // reduction partials (one per block), group-norm per-(n,c) sums
	attn    [][]T     // per worker: attention dP [L, L]
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
	return &Backend[T]{workers: max(1, runtime.GOMAXPROCS(0))}
}

// Name is "cpu-float32" or "cpu-float64".
func (be *Backend[T]) Name() string {
	var z T
	return fmt.Sprintf("cpu-%T", z)
}

// buf unwraps an operand; nil stays nil. It panics when the buffer belongs to another
// backend or precision.
func (be *Backend[T]) buf(op, name string, b ops.Buf) []T {
	if b == nil {
		return nil
	}
	p, ok := b.(*Buf[T])
	if !ok {
		panic(fmt.Sprintf("cpu %s: %s is %T, not a buffer of %s", op, name, b, be.Name()))
	}
	if p == nil {
		return nil
	}
	return p.data
}

// arg unwraps a required operand of at least n elements and returns its first n.
func (be *Backend[T]) arg(op string, shape any, name string, b ops.Buf, n int) []T {
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
func (be *Backend[T]) opt(op string, shape any, name string, b ops.Buf, n int) []T {
	if isNil(b) {
		return nil
	}
	return be.arg(op, shape, name, b, n)
}

// same unwraps operands that must all have the length of the first (the ops whose
// length is the buffers' length); none may be nil.
func (be *Backend[T]) same(op string, names string, bs ...ops.Buf) [][]T {
	out := make([][]T, len(bs))
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
	return &Buf[T]{data: make([]T, n)}
}

// Slice returns the view [off, off+n) of b, sharing its storage. The view's capacity
// ends at off+n, so an op that overruns the view panics instead of writing past it.
func (be *Backend[T]) Slice(b ops.Buf, off, n int) ops.Buf {
	d := be.buf("Slice", "b", b)
	if off < 0 || n < 0 || off+n > len(d) {
		panic(fmt.Sprintf("cpu Slice: [%d, %d+%d) out of a buffer of %d elements", off, off, n, len(d)))
	}
	return &Buf[T]{data: d[off : off+n : off+n]}
}

// Free drops the buffer's storage (the garbage collector reclaims it once no view
// refers to it); the buffer has length 0 afterwards.
func (be *Backend[T]) Free(b ops.Buf) {
	if isNil(b) {
		return
	}
	be.buf("Free", "b", b)
	b.(*Buf[T]).data = nil
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

// Fill sets every element to v.
func (be *Backend[T]) Fill(b ops.Buf, v float32) {
	d := be.buf("Fill", "b", b)
	be.parallel(len(d), func(lo, hi int) {
		x := T(v)
		for i := lo; i < hi; i++ {
			d[i] = x
		}
	})
}

// Copy copies src into dst; both have the same length.
func (be *Backend[T]) Copy(dst, src ops.Buf) {
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

// parallel runs fn over [0, n) split into one contiguous range per worker. Only for
// ops whose every output element depends on its own index alone, so the split never
// changes a result.
func (be *Backend[T]) parallel(n int, fn func(lo, hi int)) {
	if n < parallelMin || be.workers == 1 {
		fn(0, n)
		return
	}
	splitRun(be.workers, n, fn)
}

// splitRun runs fn on w contiguous ranges that cover [0, n), concurrently.
func splitRun(w, n int, fn func(lo, hi int)) {
	var wg sync.WaitGroup
	wg.Add(w - 1)
	for k := 1; k < w; k++ {
		go func(k int) {
			defer wg.Done()
			fn(k*n/w, (k+1)*n/w)
		}(k)
	}
	fn(0, n/w)
	wg.Wait()
}

// forEach calls fn(worker, i) once for every item i in [0, n), spreading the items
// over up to be.workers goroutines; worker ∈ [0, workers) names the goroutine, so fn
// may use per-worker scratch. Which worker gets which item is not fixed: fn must write
// only memory owned by item i (or worker scratch it fully overwrites per item).
func (be *Backend[T]) forEach(n int, fn func(worker, i int)) {
	w := min(be.workers, n)
	if w <= 1 {
		for i := 0; i < n; i++ {
			fn(0, i)
		}
		return
	}
	var (
		mu   sync.Mutex
		next int
		wg   sync.WaitGroup
	)
	take := func() int {
		mu.Lock()
		i := next
		next++
		mu.Unlock()
		return i
	}
	run := func(k int) {
		for i := take(); i < n; i = take() {
			fn(k, i)
		}
	}
	wg.Add(w - 1)
	for k := 1; k < w; k++ {
		go func(k int) {
			defer wg.Done()
			run(k)
		}(k)
	}
	run(0)
	wg.Wait()
}

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
