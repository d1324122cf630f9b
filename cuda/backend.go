package cuda

import (
	"fmt"
	"math"

	"github.com/ddpmgo/ddpm/ops"
)

// Buf is a float32 array in device memory (ops.Buf of this backend). A Buf made by Slice shares its parent's memory.
type Buf struct {
	p    DevicePtr
	n    int
	view bool
	be   *Backend // the backend that made it, whose deferred fills Ptr launches first (fills.go)
}

// Len is the number of float32 elements.
func (b *Buf) Len() int { return b.n }

// Ptr is the device address of element 0, for code that queues its own work on it (cuda/nccl); a zero fill of the
// backend still waiting (fills.go) is launched first.
func (b *Buf) Ptr() DevicePtr {
	if b.be != nil {
		b.be.flushFills()
		b.be.wrote(b.p, b.n) // external code may write it (packw.go)
	}
	return b.p
}

// Backend runs the op set on a Driver (the GPU or the emulator): every ops.Backend method, and the capabilities
// ops.StepController (optim.go) and ops.Feeder (data.go). Shape errors panic with the op and the shapes (as
// ops.Backend specifies); device errors are kept and returned by the next Sync.
type Backend struct {
	d       Driver
	err     error
	partial DevicePtr     // reduceMaxBlocks doubles: pass-1 sums of the reductions
	tickets DevicePtr     // ticketWords zero words: the counters of kernels whose last block finishes (ticketWords)
	prec    ops.Precision // the convolutions' and, at bf16, the GEMMs' precision (SetPrecision, conv2d.go); "" is FP32
	ws      workspace     // grow-only scratch of the conv, group-norm and attention launchers (workspace.go)
	fills   []zeroFill    // Fill(b, 0) not yet launched (fills.go)
	pw      wpack         // the convolution weights packed once per forward pass (packw.go)
}

// NewBackend returns a backend over d.
func NewBackend(d Driver) (*Backend, error) {
	p, err := d.Alloc(8 * reduceMaxBlocks)
	if err != nil {
		return nil, fmt.Errorf("cuda backend: reduction scratch: %w", err)
	}
	t, err := d.Alloc(4 * ticketWords)
	if err == nil {
		err = d.Memset32(t, 0, ticketWords)
	}
	if err != nil {
		d.Free(p)
		return nil, fmt.Errorf("cuda backend: ticket counters: %w", err)
	}
	return &Backend{d: d, partial: p, tickets: t}, nil
}

// ticketWords is the number of ticket counters: group norm's backward counts its finished blocks on word 0
// (groupnorm.cu), a split-K convolution those of each tile on word tile (conv2d.cu, splitk_last; fewer than
// convSplitTarget tiles, checkTickets). Each kernel sets its words back to 0 before it ends, and the kernels that
// use them run one after another on the default stream.
const ticketWords = 512

// Name is "cuda/" and the driver's name.
func (be *Backend) Name() string { return "cuda/" + be.d.Name() }

// Driver returns the driver the backend launches on.
func (be *Backend) Driver() Driver { return be.d }

// Close frees the backend's scratch memory: the reduction partials and the launchers' workspace (not the driver,
// nor the buffers it handed out).
func (be *Backend) Close() error {
	err := be.FreeScratch()
	if e := be.freePacked(); err == nil {
		err = e
	}
	for _, p := range []*DevicePtr{&be.partial, &be.tickets} {
		if *p != 0 {
			if e := be.d.Free(*p); err == nil {
				err = e
			}
			*p = 0
		}
	}
	return err
}

// MemInfo is the device's free and total memory (see Driver.MemInfo); the trainer checks a run against it before
// allocating anything.
func (be *Backend) MemInfo() (free, total int64, err error) { return be.d.MemInfo() }

// OwnMemory is the device memory a Backend holds for itself, beside the buffers it hands out (Alloc).
type OwnMemory struct {
	Scratch int64 // the launchers' grow-only workspace (workspace.go): packed conv operands, split-K partials, …
	Packed  int64 // the persistent packed conv weights and their table (packw.go)
	Fixed   int64 // the reduction partials and the ticket counters, allocated by NewBackend
}

// Total is the sum of the three.
func (o OwnMemory) Total() int64 { return o.Scratch + o.Packed + o.Fixed }

// OwnMemory is what the backend holds now: all three only grow during a run (until FreeScratch or Close), so after
// a training step it is the most they held in it.
func (be *Backend) OwnMemory() OwnMemory {
	o := OwnMemory{Scratch: int64(be.ws.bytes), Packed: int64(be.pw.bytes + be.pw.tableBytes)}
	if be.partial != 0 {
		o.Fixed += 8 * reduceMaxBlocks
	}
	if be.tickets != 0 {
		o.Fixed += 4 * ticketWords
	}
	return o
}

// MemUsed is the driver's device memory in use, in bytes (see Driver.MemUsed).
func (be *Backend) MemUsed() int64 { return be.d.MemUsed() }

// DeviceMemUsed is the device memory in use that the process's resident set does not already count: MemUsed on a
// GPU, 0 on the emulator (whose "device" memory is on the C heap). Benchmarks add it to the peak RSS.
func (be *Backend) DeviceMemUsed() int64 {
	if be.d.Name() == "emu" {
		return 0
	}
	return be.d.MemUsed()
}

// keep records the first device error, for Sync.
func (be *Backend) keep(op string, err error) {
	if err != nil && be.err == nil {
		be.err = fmt.Errorf("%s: %w", op, err)
	}
}

// Sync waits for queued work and returns (and clears) the first error since the last Sync.
func (be *Backend) Sync() error {
	be.flushFills()
	be.keep("Sync", be.d.Sync())
	err := be.err
	be.err = nil
	return err
}

// buf unwraps an ops.Buf of this backend, panicking with the op and argument name otherwise.
// Zero fills still waiting (fills.go) are launched first: the op is about to touch device memory.
func (be *Backend) buf(op, name string, b ops.Buf) *Buf {
	cb := be.unwrap(op, name, b)
	be.flushFills()
	return cb
}

// unwrap is buf without launching the waiting fills.
func (be *Backend) unwrap(op, name string, b ops.Buf) *Buf {
	cb, ok := b.(*Buf)
	if !ok || cb == nil {
		panic(fmt.Sprintf("cuda %s: %s is %T, not a *cuda.Buf", op, name, b))
	}
	return cb
}

// bufs unwraps buffers that must all hold n elements; names is a comma-separated list for messages.
func (be *Backend) bufs(op string, n int, names []string, bs ...ops.Buf) []*Buf {
	out := make([]*Buf, len(bs))
	for i, b := range bs {
		out[i] = be.buf(op, names[i], b)
		if out[i].n != n {
			panic(fmt.Sprintf("cuda %s: %s has %d elements, want %d", op, names[i], out[i].n, n))
		}
	}
	return out
}

// Alloc returns a zero-filled buffer of n float32.
func (be *Backend) Alloc(n int) ops.Buf {
	if n < 0 {
		panic(fmt.Sprintf("cuda Alloc: negative length %d", n))
	}
	p, err := be.d.Alloc(4 * max(n, 1))
	if err != nil {
		panic(&ops.DeviceError{Op: fmt.Sprintf("cuda Alloc of %d float32", n), Err: err})
	}
	be.keep("Alloc", be.d.Memset32(p, 0, max(n, 1)))
	return &Buf{p: p, n: n, be: be}
}

// Slice returns the view [off, off+n) of b.
func (be *Backend) Slice(b ops.Buf, off, n int) ops.Buf {
	cb := be.unwrap("Slice", "b", b) // touches no memory: a waiting fill stays waiting
	if off < 0 || n < 0 || off+n > cb.n {
		panic(fmt.Sprintf("cuda Slice: [%d, %d+%d) out of a buffer of %d elements", off, off, n, cb.n))
	}
	return &Buf{p: cb.p + DevicePtr(4*off), n: n, view: true, be: be}
}

// Free releases a buffer from Alloc (a view frees nothing); its length is 0 afterwards.
func (be *Backend) Free(b ops.Buf) {
	cb := be.buf("Free", "b", b)
	be.wrote(cb.p, cb.n)
	if !cb.view && cb.p != 0 {
		be.keep("Free", be.d.Free(cb.p))
	}
	cb.p, cb.n = 0, 0
}

// Upload copies src into dst (same length).
func (be *Backend) Upload(dst ops.Buf, src []float32) {
	d := be.buf("Upload", "dst", dst)
	if d.n != len(src) {
		panic(fmt.Sprintf("cuda Upload: dst has %d elements, src %d", d.n, len(src)))
	}
	be.wrote(d.p, d.n)
	be.keep("Upload", Upload(be.d, d.p, src))
}

// Download copies src into dst (same length), after the work queued before it.
func (be *Backend) Download(dst []float32, src ops.Buf) {
	s := be.buf("Download", "src", src)
	if s.n != len(dst) {
		panic(fmt.Sprintf("cuda Download: src has %d elements, dst %d", s.n, len(dst)))
	}
	be.keep("Download", Download(be.d, dst, s.p))
}

// Fill sets every element of b to v. Zero fills wait for the next op (fills.go), which may write b instead of
// accumulating into it.
func (be *Backend) Fill(b ops.Buf, v float32) {
	cb := be.unwrap("Fill", "b", b)
	be.wrote(cb.p, cb.n)
	if v == 0 && !math.Signbit(float64(v)) && cb.n > 0 {
		be.deferZero(cb)
		return
	}
	be.buf("Fill", "b", b)
	be.memset("Fill", cb.p, v, cb.n)
}

// Copy copies src into dst (same length).
func (be *Backend) Copy(dst, src ops.Buf) {
	s := be.buf("Copy", "src", src)
	d := be.bufs("Copy", s.n, []string{"dst"}, dst)[0]
	be.wrote(d.p, d.n)
	be.keep("Copy", be.d.DtoD(d.p, s.p, 4*s.n))
}

// elementwiseThreads is the block size of the grid-stride elementwise kernels; elementwiseMaxBlocks caps their grid
// (each thread then loops), which keeps launches cheap for huge n on the GPU and bounded on the emulator.
const (
	elementwiseThreads   = 256
	elementwiseMaxBlocks = 8192
)

// launch1D runs a grid-stride kernel over n elements; a no-op for n = 0.
func (be *Backend) launch1D(op, kernel string, n int, args ...Arg) {
	if n == 0 {
		return
	}
	blocks := min((n+elementwiseThreads-1)/elementwiseThreads, elementwiseMaxBlocks)
	be.keep(op, be.d.Launch(kernel, Dim3{X: blocks}, Dim3{X: elementwiseThreads}, 0, args...))
}
