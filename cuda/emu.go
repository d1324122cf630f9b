//go:build !cuda

package cuda

/*
#cgo CXXFLAGS: -O2 -std=c++17 -fno-strict-aliasing -Wall -Wno-unused-variable -Wno-unused-function
#cgo LDFLAGS: -lpthread
#include <stdint.h>
#include <stdlib.h>
void emu_set_workers(int n);
int emu_launch(const char* name, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
               unsigned smem, const uint64_t* argv, const char* kinds, const int* sizes, int nargs, char* err,
               int errlen);
void* emu_alloc(size_t bytes, int guard);
int emu_free(void* p);
int emu_check_guards(char* err, int errlen);
int emu_kernel_count(void);
const char* emu_kernel_name(int i);
int emu_set_order(const char* spec, char* err, int errlen);
void emu_get_order(char* buf, int len);
long emu_shared_poison_bytes(void);
int emu_kernel_signature(const char* name, int* nargs, const char** kinds, const int** sizes);
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"unsafe"

	"github.com/ddpmgo/ddpm/kernels"
)

// The embedded sources tie this package's build to the .cu files it #includes (see package kernels).
var _ = kernels.Sources

// EmuOptions configure the emulator.
type EmuOptions struct {
	// Workers is the number of OS threads that run blocks (default 2). It takes effect on the first launch of the
	// process; the pool is shared by all emulators.
	Workers int
	// Guard surrounds every allocation with 256 canary bytes on each side and checks all of them after every launch,
	// so that a kernel's out-of-bounds write fails the launch that made it. For tests.
	Guard bool
}

// Emulator is the Driver over the CPU emulator. Kernels run synchronously, on Workers OS threads.
type Emulator struct {
	opts   EmuOptions
	mu     sync.Mutex
	allocs map[DevicePtr]int
	used   int64 // the sum of allocs' sizes
	peak   int64 // the most used has been
	closed bool
}

var _ Driver = (*Emulator)(nil)

// NewEmulator returns an emulator driver.
func NewEmulator(opts EmuOptions) *Emulator {
	if opts.Workers > 0 {
		C.emu_set_workers(C.int(opts.Workers))
	}
	return &Emulator{opts: opts, allocs: map[DevicePtr]int{}}
}

// openEmu is Open("emu"): an emulator with a worker per CPU.
func openEmu() (Driver, error) { return NewEmulator(EmuOptions{Workers: runtime.NumCPU()}), nil }

func openCUDA(int) (Driver, error) {
	return nil, errors.New("cuda: -device cuda needs a binary built with -tags cuda (this build has only the emulator, -device emu)")
}

// Name returns "emu".
func (e *Emulator) Name() string { return "emu" }

// Alloc returns bytes of C-heap memory filled with 0xFF (uninitialised floats read as NaN).
func (e *Emulator) Alloc(bytes int) (DevicePtr, error) {
	if bytes <= 0 {
		return 0, fmt.Errorf("emu: alloc of %d bytes", bytes)
	}
	g := 0
	if e.opts.Guard {
		g = 1
	}
	p := C.emu_alloc(C.size_t(bytes), C.int(g))
	if p == nil {
		return 0, fmt.Errorf("emu: alloc of %d bytes: out of memory", bytes)
	}
	dp := DevicePtr(uintptr(p))
	e.mu.Lock()
	e.allocs[dp] = bytes
	e.used += int64(bytes)
	e.peak = max(e.peak, e.used)
	e.mu.Unlock()
	return dp, nil
}

// Free releases memory from Alloc.
func (e *Emulator) Free(p DevicePtr) error {
	e.mu.Lock()
	n, ok := e.allocs[p]
	delete(e.allocs, p)
	e.used -= int64(n)
	e.mu.Unlock()
	if !ok {
		return fmt.Errorf("emu: free of %#x, which this emulator did not allocate", uintptr(p))
	}
	C.emu_free(p.host())
	return nil
}

// check verifies that [p, p+bytes) lies inside one allocation of this emulator.
func (e *Emulator) check(op string, p DevicePtr, bytes int) error {
	if bytes < 0 {
		return fmt.Errorf("emu: %s of %d bytes", op, bytes)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for base, n := range e.allocs {
		if p >= base && p+DevicePtr(bytes) <= base+DevicePtr(n) {
			return nil
		}
	}
	return fmt.Errorf("emu: %s of %d bytes at %#x is outside every allocation", op, bytes, uintptr(p))
}

// host is the address as a Go pointer; the memory is C heap, which the garbage collector ignores. (Reading the
// uintptr's bits, rather than converting, keeps go vet's unsafeptr check meaningful for the rest of the package.)
func (p DevicePtr) host() unsafe.Pointer { return *(*unsafe.Pointer)(unsafe.Pointer(&p)) }

func devSlice(p DevicePtr, bytes int) []byte {
	return unsafe.Slice((*byte)(p.host()), bytes)
}

// HtoD copies from host to "device".
func (e *Emulator) HtoD(dst DevicePtr, src unsafe.Pointer, bytes int) error {
	if err := e.check("HtoD", dst, bytes); err != nil || bytes == 0 {
		return err
	}
	copy(devSlice(dst, bytes), unsafe.Slice((*byte)(src), bytes))
	return nil
}

// DtoH copies from "device" to host.
func (e *Emulator) DtoH(dst unsafe.Pointer, src DevicePtr, bytes int) error {
	if err := e.check("DtoH", src, bytes); err != nil || bytes == 0 {
		return err
	}
	copy(unsafe.Slice((*byte)(dst), bytes), devSlice(src, bytes))
	return nil
}

// DtoD copies within the "device" (overlapping ranges are allowed, as memmove).
func (e *Emulator) DtoD(dst, src DevicePtr, bytes int) error {
	if err := e.check("DtoD source", src, bytes); err != nil {
		return err
	}
	if err := e.check("DtoD destination", dst, bytes); err != nil || bytes == 0 {
		return err
	}
	copy(devSlice(dst, bytes), devSlice(src, bytes))
	return nil
}

// Memset32 writes v to n words at p.
func (e *Emulator) Memset32(p DevicePtr, v uint32, n int) error {
	if err := e.check("Memset32", p, 4*n); err != nil || n == 0 {
		return err
	}
	w := unsafe.Slice((*uint32)(p.host()), n)
	for i := range w {
		w[i] = v
	}
	return nil
}

// Launch runs the kernel to completion. Errors: unknown kernel, argument kinds or sizes that differ from the
// kernel's signature, an invalid configuration, barrier misuse, and (with Guard) damaged canaries.
func (e *Emulator) Launch(kernel string, grid, block Dim3, sharedBytes int, args ...Arg) error {
	grid, block = grid.norm(), block.norm()
	if grid.X <= 0 || grid.Y <= 0 || grid.Z <= 0 || block.X <= 0 || block.Y <= 0 || block.Z <= 0 || sharedBytes < 0 {
		return fmt.Errorf("emu: launch %s: invalid grid %v block %v shared %d", kernel, grid, block, sharedBytes)
	}
	n := len(args)
	// One C buffer: argv (8 bytes each), sizes (4 bytes each), kinds, name, error message.
	const errLen = 1024
	size := 8*n + 4*n + n + len(kernel) + 1 + errLen + 8
	buf := C.malloc(C.size_t(size))
	defer C.free(buf)
	mem := unsafe.Slice((*byte)(buf), size)
	argv := unsafe.Slice((*uint64)(buf), n)
	sizes := unsafe.Slice((*int32)(unsafe.Pointer(&mem[8*n])), n)
	kinds := mem[12*n : 13*n]
	name := mem[13*n : 13*n+len(kernel)+1]
	msg := mem[13*n+len(kernel)+1 : 13*n+len(kernel)+1+errLen]
	for i, a := range args {
		argv[i], sizes[i], kinds[i] = a.bits, int32(a.size), a.kind
	}
	copy(name, kernel)
	name[len(kernel)] = 0
	msg[0] = 0
	ptr := func(b []byte) unsafe.Pointer {
		if len(b) == 0 {
			return buf
		}
		return unsafe.Pointer(&b[0])
	}
	rc := C.emu_launch((*C.char)(ptr(name)), C.uint(grid.X), C.uint(grid.Y), C.uint(grid.Z),
		C.uint(block.X), C.uint(block.Y), C.uint(block.Z), C.uint(sharedBytes),
		(*C.uint64_t)(buf), (*C.char)(ptr(kinds)), (*C.int)(ptr(mem[8*n:12*n])), C.int(n),
		(*C.char)(ptr(msg)), errLen)
	if rc != 0 {
		return fmt.Errorf("emu: launch %s grid %v block %v: %s", kernel, grid, block, C.GoString((*C.char)(ptr(msg))))
	}
	if e.opts.Guard {
		if bad := C.emu_check_guards((*C.char)(ptr(msg)), errLen); bad != 0 {
			return fmt.Errorf("emu: launch %s grid %v block %v: %s (%d allocation(s) damaged)", kernel, grid, block,
				C.GoString((*C.char)(ptr(msg))), int(bad))
		}
	}
	return nil
}

// EmuKernels lists the names of the kernels compiled into the emulator (kernels/*.cu and the shim's self-test).
func EmuKernels() []string {
	n := int(C.emu_kernel_count())
	names := make([]string, n)
	for i := range names {
		names[i] = C.GoString(C.emu_kernel_name(C.int(i)))
	}
	return names
}

// SetEmuOrder sets the order in which the emulator runs the threads of a block between barriers, for all later
// launches of the process: "forward" (thread-id order, the default), "reverse", "random" or "random:SEED" (a new
// pseudo-random order at every barrier interval). The reverse and random orders also fill static shared memory with
// 0xFF bytes at block start. Every order is a legal CUDA schedule, so a kernel whose result changes with it has a
// race. It overrides the environment variable DDPM_EMU_ORDER, which sets the initial order.
func SetEmuOrder(spec string) error {
	cs := C.CString(spec)
	defer C.free(unsafe.Pointer(cs))
	const errLen = 256
	msg := (*C.char)(C.malloc(errLen))
	defer C.free(unsafe.Pointer(msg))
	if C.emu_set_order(cs, msg, errLen) != 0 {
		return errors.New(C.GoString(msg))
	}
	return nil
}

// EmuOrder is the emulator's current order (see SetEmuOrder).
func EmuOrder() string {
	const n = 128
	buf := (*C.char)(C.malloc(n))
	defer C.free(unsafe.Pointer(buf))
	C.emu_get_order(buf, n)
	return C.GoString(buf)
}

// emuKernelSignature gives the parameters of the emulator's kernel name: their kinds ('p', 'i', 'u', 'f') and sizes.
func emuKernelSignature(name string) (kinds []byte, sizes []int, ok bool) {
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	var n C.int
	var ck *C.char
	var cz *C.int
	if C.emu_kernel_signature(cs, &n, &ck, &cz) != 0 {
		return nil, nil, false
	}
	kinds = C.GoBytes(unsafe.Pointer(ck), n)
	for _, z := range unsafe.Slice(cz, int(n)) {
		sizes = append(sizes, int(z))
	}
	return kinds, sizes, true
}

// emuSharedPoisonBytes is the number of bytes of static shared memory the reverse and random orders poison at block
// start (0 if the emulator could not locate it).
func emuSharedPoisonBytes() int { return int(C.emu_shared_poison_bytes()) }

// TensorCores is true: the emulator runs the _tf32 kernels, emulating mma.sync and cp.async (kernels/emu/mma.h,
// kernels/emu/cp_async.h).
func (e *Emulator) TensorCores() bool { return true }

// MemUsed is the sum of the live allocations' sizes.
func (e *Emulator) MemUsed() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.used
}

// MemPeak is the most MemUsed has been since the emulator was made (or since ResetPeak).
func (e *Emulator) MemPeak() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.peak
}

// ResetPeak starts a new peak from the live bytes.
func (e *Emulator) ResetPeak() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.peak = e.used
}

// MemInfo reads MemAvailable and MemTotal from /proc/meminfo: the emulator's device memory is host memory.
func (e *Emulator) MemInfo() (free, total int64, err error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, 0, fmt.Errorf("emu: memory info: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		var kb int64
		if _, err := fmt.Sscanf(line, "MemAvailable: %d kB", &kb); err == nil {
			free = kb << 10
		} else if _, err := fmt.Sscanf(line, "MemTotal: %d kB", &kb); err == nil {
			total = kb << 10
		}
	}
	if free == 0 || total == 0 {
		return 0, 0, fmt.Errorf("emu: memory info: no MemAvailable/MemTotal in /proc/meminfo")
	}
	return free, total, nil
}

// Sync returns nil: emulator launches are synchronous.
func (e *Emulator) Sync() error { return nil }

// Close frees every allocation still live.
func (e *Emulator) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	for p := range e.allocs {
		C.emu_free(p.host())
	}
	e.allocs = map[DevicePtr]int{}
	e.used = 0
	e.closed = true
	return nil
}
