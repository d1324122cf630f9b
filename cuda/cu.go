//go:build cuda

package cuda

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"runtime"
	"sync"
	"unsafe"

	"gorgonia.org/cu"

	"github.com/ddpmgo/ddpm/kernels"
)

// GPU is the Driver over gorgonia.org/cu. A CUDA context is current per OS thread, so one goroutine, locked to its
// thread, creates the context and makes every driver call; the methods hand it closures and wait for the result.
// Only package-level cu functions are called there (cu's *Ctx methods would deadlock or lose errors). After Close,
// every method that needs the device returns an error wrapping ErrClosed.
type GPU struct {
	work      chan func()
	quit      chan struct{} // closed by Close: the owning goroutine releases the context and exits
	closed    chan error    // the owning goroutine's last word: the error of releasing the context
	closeOnce sync.Once
	name      string
	fns       map[string]cu.Function // kernel name -> function, filled at start from every embedded module
	params    map[string][]ptxParam  // kernel name -> its PTX parameters, to check each launch's arguments
	cc        int                    // compute capability, major·10 + minor (e.g. 90 for an H100)
	smem      map[string]int         // kernel name -> dynamic shared memory allowed above 48 KiB (cu_attr.go)
}

var _ Driver = (*GPU)(nil)

func openEmu() (Driver, error) {
	return nil, errors.New("cuda: -device emu is not in builds with -tags cuda (build without the tag for the emulator)")
}

// openCUDA opens GPU localRank mod the number of visible GPUs.
func openCUDA(localRank int) (Driver, error) {
	n, err := cu.NumDevices()
	if err != nil {
		return nil, fmt.Errorf("cuda: counting GPUs: %w", err)
	}
	if n < 1 {
		return nil, errors.New("cuda: no GPU visible (check CUDA_VISIBLE_DEVICES)")
	}
	return NewGPU(localRank % n)
}

// NewGPU opens device ordinal, creates its context on a dedicated locked OS thread, and loads every embedded PTX
// module. Note: gorgonia.org/cu's init exits the process when the CUDA driver cannot initialise, before this runs.
func NewGPU(ordinal int) (*GPU, error) {
	g := &GPU{work: make(chan func()), quit: make(chan struct{}), closed: make(chan error, 1),
		fns: map[string]cu.Function{}, params: map[string][]ptxParam{},
		smem: map[string]int{}}
	ready := make(chan error)
	go g.loop(ordinal, ready)
	if err := <-ready; err != nil {
		return nil, err
	}
	return g, nil
}

func (g *GPU) loop(ordinal int, ready chan<- error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	dev, err := cu.GetDevice(ordinal)
	if err != nil {
		ready <- fmt.Errorf("cuda: device %d: %w", ordinal, err)
		return
	}
	name, err := dev.Name()
	if err != nil {
		ready <- fmt.Errorf("cuda: device %d name: %w", ordinal, err)
		return
	}
	major, err := dev.Attribute(cu.ComputeCapabilityMajor)
	if err != nil {
		ready <- fmt.Errorf("cuda: %s compute capability: %w", name, err)
		return
	}
	minor, err := dev.Attribute(cu.ComputeCapabilityMinor)
	if err != nil {
		ready <- fmt.Errorf("cuda: %s compute capability: %w", name, err)
		return
	}
	g.cc = 10*major + minor
	ctx, err := dev.MakeContext(cu.SchedAuto)
	if err != nil {
		ready <- fmt.Errorf("cuda: context on %s: %w", name, err)
		return
	}
	var mods []cu.Module
	cleanup := func() error {
		var errs []error
		for _, m := range mods {
			if err := m.Unload(); err != nil {
				errs = append(errs, fmt.Errorf("cuda: unload module: %w", err))
			}
		}
		if err := ctx.Destroy(); err != nil {
			errs = append(errs, fmt.Errorf("cuda: destroy context: %w", err))
		}
		return errors.Join(errs...)
	}
	if err := g.loadModules(&mods); err != nil {
		cleanup()
		ready <- err
		return
	}
	g.name = "cuda:" + name
	ready <- nil
	for {
		select {
		case f := <-g.work:
			f()
		case <-g.quit:
			g.closed <- cleanup()
			return
		}
	}
}

// loadModules loads kernels/ptx/*.ptx (compute_70) and indexes the .entry functions of each by name; on devices of
// compute capability 8.0 or newer it then loads kernels/ptx/sm80/*.ptx (compute_80, where the _tf32 kernels use
// tensor cores), whose functions replace those of the same name.
func (g *GPU) loadModules(mods *[]cu.Module) error {
	files, err := fs.Glob(kernels.PTX, "ptx/*.ptx")
	if err != nil || len(files) == 0 {
		return fmt.Errorf("cuda: no embedded PTX (run make ptx): %v", err)
	}
	if err := g.loadFiles(mods, files, false); err != nil {
		return err
	}
	if g.cc < 80 {
		return nil
	}
	sm80, err := fs.Glob(kernels.PTX, "ptx/sm80/*.ptx")
	if err != nil || len(sm80) == 0 {
		return fmt.Errorf("cuda: no embedded sm80 PTX (run make ptx): %v", err)
	}
	return g.loadFiles(mods, sm80, true)
}

// loadFiles loads PTX modules and indexes their kernels; replace lets a kernel override one loaded before.
func (g *GPU) loadFiles(mods *[]cu.Module, files []string, replace bool) error {
	for _, f := range files {
		src, err := fs.ReadFile(kernels.PTX, f)
		if err != nil {
			return fmt.Errorf("cuda: read %s: %w", f, err)
		}
		m, err := cu.LoadData(string(src))
		if err != nil {
			return fmt.Errorf("cuda: load %s: %w", path.Base(f), err)
		}
		*mods = append(*mods, m)
		entries, err := ptxEntries(string(src))
		if err != nil {
			return fmt.Errorf("cuda: %s: %w", path.Base(f), err)
		}
		for _, e := range entries {
			fn, err := m.Function(e.name)
			if err != nil {
				return fmt.Errorf("cuda: %s: function %s: %w", path.Base(f), e.name, err)
			}
			if _, dup := g.fns[e.name]; dup && !replace {
				return fmt.Errorf("cuda: kernel %s defined twice (second in %s)", e.name, path.Base(f))
			}
			g.fns[e.name] = fn
			g.params[e.name] = e.params
		}
	}
	return nil
}

// do runs f on the context's goroutine and returns its error, or ErrClosed once Close has been called.
func (g *GPU) do(f func() error) error {
	errc := make(chan error, 1)
	select {
	case g.work <- func() { errc <- f() }:
		return <-errc
	case <-g.quit:
		return ErrClosed
	}
}

// Name returns "cuda:" and the device name.
func (g *GPU) Name() string { return g.name }

// Alloc returns bytes of device memory.
func (g *GPU) Alloc(bytes int) (DevicePtr, error) {
	if bytes <= 0 {
		return 0, fmt.Errorf("cuda: alloc of %d bytes", bytes)
	}
	var p cu.DevicePtr
	err := g.do(func() (err error) { p, err = cu.MemAlloc(int64(bytes)); return })
	if err != nil {
		return 0, fmt.Errorf("cuda: alloc of %d bytes: %w", bytes, err)
	}
	return DevicePtr(p), nil
}

// Free releases device memory.
func (g *GPU) Free(p DevicePtr) error {
	if err := g.do(func() error { return cu.MemFree(cu.DevicePtr(p)) }); err != nil {
		return fmt.Errorf("cuda: free %#x: %w", uintptr(p), err)
	}
	return nil
}

// HtoD copies host memory to the device (synchronously: src may be reused on return).
func (g *GPU) HtoD(dst DevicePtr, src unsafe.Pointer, bytes int) error {
	if bytes == 0 {
		return g.closedErr()
	}
	if err := g.do(func() error { return cu.MemcpyHtoD(cu.DevicePtr(dst), src, int64(bytes)) }); err != nil {
		return fmt.Errorf("cuda: HtoD of %d bytes: %w", bytes, err)
	}
	return nil
}

// DtoH copies device memory to the host, after the work queued before it.
func (g *GPU) DtoH(dst unsafe.Pointer, src DevicePtr, bytes int) error {
	if bytes == 0 {
		return g.closedErr()
	}
	if err := g.do(func() error { return cu.MemcpyDtoH(dst, cu.DevicePtr(src), int64(bytes)) }); err != nil {
		return fmt.Errorf("cuda: DtoH of %d bytes: %w", bytes, err)
	}
	return nil
}

// DtoD copies within the device.
func (g *GPU) DtoD(dst, src DevicePtr, bytes int) error {
	if bytes == 0 {
		return g.closedErr()
	}
	if err := g.do(func() error { return cu.MemcpyDtoD(cu.DevicePtr(dst), cu.DevicePtr(src), int64(bytes)) }); err != nil {
		return fmt.Errorf("cuda: DtoD of %d bytes: %w", bytes, err)
	}
	return nil
}

// Memset32 writes v to n 32-bit words at p.
func (g *GPU) Memset32(p DevicePtr, v uint32, n int) error {
	if n == 0 {
		return g.closedErr()
	}
	if err := g.do(func() error { return cu.MemsetD32(cu.DevicePtr(p), v, int64(n)) }); err != nil {
		return fmt.Errorf("cuda: Memset32 of %d words: %w", n, err)
	}
	return nil
}

// Launch queues the kernel on the default stream. Each argument is passed as a pointer to 8 bytes holding the
// value in its low bytes; cu copies 8 bytes per argument and the driver reads the parameter's own size.
func (g *GPU) Launch(kernel string, grid, block Dim3, sharedBytes int, args ...Arg) error {
	grid, block = grid.norm(), block.norm()
	fn, ok := g.fns[kernel]
	if !ok {
		return fmt.Errorf("cuda: launch %s: no such kernel in the embedded PTX", kernel)
	}
	// The driver reads each parameter's PTX size from its pointer and cannot count the pointers, so a launch with
	// arguments missing, extra or of the wrong size would run with garbage: check them here.
	if err := checkArgs(g.params[kernel], args); err != nil {
		return fmt.Errorf("cuda: launch %s: %w", kernel, err)
	}
	vals := make([]uint64, len(args))
	ptrs := make([]unsafe.Pointer, len(args))
	for i, a := range args {
		vals[i] = a.bits
		ptrs[i] = unsafe.Pointer(&vals[i])
	}
	err := g.do(func() error {
		if sharedBytes > defaultSharedBytes && g.smem[kernel] < sharedBytes {
			if err := allowShared(fn, sharedBytes); err != nil {
				return err
			}
			g.smem[kernel] = sharedBytes
		}
		return fn.Launch(grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, sharedBytes, cu.NoStream, ptrs)
	})
	if err != nil {
		return fmt.Errorf("cuda: launch %s grid %v block %v shared %d: %w", kernel, grid, block, sharedBytes, err)
	}
	return nil
}

// TensorCores says whether the device has them for the _tf32 kernels (compute capability 8.0 or newer).
func (g *GPU) TensorCores() bool { return g.cc >= 80 }

// ComputeCapability is major·10 + minor, e.g. 80 for an A100, 90 for an H100.
func (g *GPU) ComputeCapability() int { return g.cc }

// MemUsed is total − free device memory as cuMemGetInfo reports them (0 if the query fails).
func (g *GPU) MemUsed() int64 {
	var free, total int64
	if err := g.do(func() (err error) { free, total, err = cu.MemInfo(); return }); err != nil {
		return 0
	}
	return total - free
}

// MemInfo is cuMemGetInfo: the device's free and total memory.
func (g *GPU) MemInfo() (free, total int64, err error) {
	err = g.do(func() (err error) { free, total, err = cu.MemInfo(); return })
	if err != nil {
		return 0, 0, fmt.Errorf("cuda: cuMemGetInfo: %w", err)
	}
	return free, total, nil
}

// Sync waits for the device and returns the first error of the queued work (e.g. a kernel's illegal address).
func (g *GPU) Sync() error {
	if err := g.do(cu.Synchronize); err != nil {
		return fmt.Errorf("cuda: synchronize: %w", err)
	}
	return nil
}

var _ Streams = (*GPU)(nil)

// cu.Stream and cu.Event hold just the driver's handle (CUstream, CUevent); cu has no constructor from one.
func cuStream(s Stream) (c cu.Stream) { *(*uintptr)(unsafe.Pointer(&c)) = uintptr(s); return }
func cuEvent(e Event) (c cu.Event)    { *(*uintptr)(unsafe.Pointer(&c)) = uintptr(e); return }

// NewStream makes a CU_STREAM_NON_BLOCKING stream.
func (g *GPU) NewStream() (Stream, error) {
	var s cu.Stream
	if err := g.do(func() (err error) { s, err = cu.MakeStream(cu.NonBlocking); return }); err != nil {
		return 0, fmt.Errorf("cuda: cuStreamCreate: %w", err)
	}
	return Stream(*(*uintptr)(unsafe.Pointer(&s))), nil
}

// DestroyStream destroys s (its queued work still runs).
func (g *GPU) DestroyStream(s Stream) error {
	if err := g.do(func() error { c := cuStream(s); return c.Destroy() }); err != nil {
		return fmt.Errorf("cuda: cuStreamDestroy: %w", err)
	}
	return nil
}

// NewEvent makes a CU_EVENT_DISABLE_TIMING event.
func (g *GPU) NewEvent() (Event, error) {
	var e cu.Event
	if err := g.do(func() (err error) { e, err = cu.MakeEvent(cu.DisableTiming); return }); err != nil {
		return 0, fmt.Errorf("cuda: cuEventCreate: %w", err)
	}
	return Event(*(*uintptr)(unsafe.Pointer(&e))), nil
}

// DestroyEvent destroys ev.
func (g *GPU) DestroyEvent(ev Event) error {
	if err := g.do(func() error { c := cuEvent(ev); return cu.DestroyEvent(&c) }); err != nil {
		return fmt.Errorf("cuda: cuEventDestroy: %w", err)
	}
	return nil
}

// Record queues cuEventRecord(ev, s).
func (g *GPU) Record(ev Event, s Stream) error {
	if err := g.do(func() error { return cuEvent(ev).Record(cuStream(s)) }); err != nil {
		return fmt.Errorf("cuda: cuEventRecord: %w", err)
	}
	return nil
}

// Wait queues cuStreamWaitEvent(s, ev, 0).
func (g *GPU) Wait(s Stream, ev Event) error {
	if err := g.do(func() error { return cuStream(s).Wait(cuEvent(ev), 0) }); err != nil {
		return fmt.Errorf("cuda: cuStreamWaitEvent: %w", err)
	}
	return nil
}

// Do runs f on the goroutine that owns the context (a library that calls the CUDA runtime, as NCCL does, finds the
// context current there) and returns its error.
func (g *GPU) Do(f func() error) error { return g.do(f) }

// Close destroys the context (freeing all its memory), stops the owning goroutine and returns the error of releasing
// the context. Later calls do nothing and return nil; the other methods then return an error wrapping ErrClosed.
func (g *GPU) Close() error {
	var err error
	g.closeOnce.Do(func() {
		close(g.quit)
		err = <-g.closed
	})
	return err
}

// closedErr is ErrClosed after Close, else nil (for the calls that need no driver call, e.g. a 0-byte copy).
func (g *GPU) closedErr() error {
	select {
	case <-g.quit:
		return ErrClosed
	default:
		return nil
	}
}
