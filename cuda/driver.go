// Package cuda is the GPU backend: a small driver layer with two implementations, and above it one launcher per
// kernel family (kernels/*.cu).
//
//   - Built with -tags cuda, the driver runs on an NVIDIA GPU through gorgonia.org/cu: one OS-thread-locked goroutine
//     owns the context, and the PTX of kernels/ptx is embedded and loaded with cu.LoadData.
//   - In the default build, the driver is the CPU emulator (kernels/emu): the same kernel sources compiled with g++
//     through a CUDA shim and called over cgo, with "device" memory allocated in C.
//
// Open("emu") or Open("cuda") picks one; each build offers only its own and says so for the other.
package cuda

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"unsafe"
)

// ErrClosed is returned (wrapped) by a GPU driver's methods after Close.
var ErrClosed = errors.New("cuda: the device is closed")

// DevicePtr is an address in device memory (for the emulator, an address on the C heap). Zero is the null pointer.
type DevicePtr uintptr

// Dim3 is a grid or block shape, as CUDA's dim3. A zero field counts as 1.
type Dim3 struct{ X, Y, Z int }

func (d Dim3) norm() Dim3 {
	if d.Y == 0 {
		d.Y = 1
	}
	if d.Z == 0 {
		d.Z = 1
	}
	return d
}

// Arg is one kernel argument: a device pointer or a 4- or 8-byte scalar, stored in the low bytes of a uint64 (the
// layout cu.Launch copies, 8 bytes per argument). Kind and size let the emulator check each launch against the
// kernel's C++ signature.
type Arg struct {
	bits uint64
	kind byte // 'p' pointer, 'i' signed, 'u' unsigned, 'f' float
	size uint8
}

// Ptr passes a device pointer.
func Ptr(p DevicePtr) Arg { return Arg{uint64(p), 'p', 8} }

// I32 passes a C int.
func I32(v int32) Arg { return Arg{uint64(uint32(v)), 'i', 4} }

// U32 passes a C unsigned int.
func U32(v uint32) Arg { return Arg{uint64(v), 'u', 4} }

// I64 passes a C long long.
func I64(v int64) Arg { return Arg{uint64(v), 'i', 8} }

// U64 passes a C unsigned long long.
func U64(v uint64) Arg { return Arg{v, 'u', 8} }

// F32 passes a C float.
func F32(v float32) Arg { return Arg{uint64(math.Float32bits(v)), 'f', 4} }

// F64 passes a C double.
func F64(v float64) Arg { return Arg{math.Float64bits(v), 'f', 8} }

// Kind is 'p' (pointer), 'i' (signed), 'u' (unsigned) or 'f' (float).
func (a Arg) Kind() byte { return a.kind }

// Size is the argument's size in bytes (4 or 8).
func (a Arg) Size() int { return int(a.size) }

// Bits is the value in the low Size bytes (a pointer's address, an integer, a float's IEEE bits).
func (a Arg) Bits() uint64 { return a.bits }

func (a Arg) String() string {
	return fmt.Sprintf("%c%d(%#x)", a.kind, 8*int(a.size), a.bits)
}

// Geometry is how launch records (train/testdata/launches_tiny_step.golden, internal/gpureport) print a launch's
// arguments: pointers and floats by kind and width only (addresses change from run to run; learning rates and
// scales are not launch geometry), integers with their values (sizes, seeds, counters): "p64,i32=16,f32,u64=0".
func Geometry(args []Arg) string {
	var b strings.Builder
	for i, a := range args {
		if i > 0 {
			b.WriteByte(',')
		}
		switch a.kind {
		case 'p', 'f':
			fmt.Fprintf(&b, "%c%d", a.kind, 8*a.size)
		case 'i':
			v := int64(a.bits)
			if a.size == 4 {
				v = int64(int32(uint32(a.bits)))
			}
			fmt.Fprintf(&b, "i%d=%d", 8*a.size, v)
		default:
			fmt.Fprintf(&b, "%c%d=%d", a.kind, 8*a.size, a.bits)
		}
	}
	return b.String()
}

// Driver is the device: memory, copies and kernel launches. Launches may be asynchronous (on a GPU, errors of a
// kernel surface at the next Sync); the emulator runs them synchronously. A Driver is safe for use by one goroutine
// at a time.
type Driver interface {
	// Name says which device this is, e.g. "emu" or "cuda:NVIDIA H100".
	Name() string
	// Alloc returns bytes of uninitialised device memory, 256-byte aligned.
	Alloc(bytes int) (DevicePtr, error)
	// Free releases memory from Alloc.
	Free(p DevicePtr) error
	// HtoD copies bytes from host memory src to dst; DtoH the other way; DtoD within the device.
	HtoD(dst DevicePtr, src unsafe.Pointer, bytes int) error
	DtoH(dst unsafe.Pointer, src DevicePtr, bytes int) error
	DtoD(dst, src DevicePtr, bytes int) error
	// Memset32 writes the 32-bit pattern v to n consecutive words at p.
	Memset32(p DevicePtr, v uint32, n int) error
	// Launch runs the extern "C" kernel named kernel on grid × block threads with sharedBytes of dynamic shared memory.
	Launch(kernel string, grid, block Dim3, sharedBytes int, args ...Arg) error
	// Sync waits for all queued work and returns its first error.
	Sync() error
	// Close releases the device; the Driver must not be used afterwards.
	Close() error
	// TensorCores says whether the _tf32 convolution kernels run on tensor cores here: a GPU of compute capability
	// 8.0 or newer (which loads kernels/ptx/sm80), and the emulator (which emulates TF32 rounding).
	TensorCores() bool
	// MemUsed is the device memory in use, in bytes: the emulator's live allocations; on a GPU, total − free as
	// cuMemGetInfo reports them (so it includes the context and other processes).
	MemUsed() int64
	// MemInfo is the device's free and total memory in bytes: cuMemGetInfo on a GPU; on the emulator, whose
	// "device" memory is host memory, MemAvailable and MemTotal of /proc/meminfo.
	MemInfo() (free, total int64, err error)
}

// Stream and Event are a driver's handles of a CUDA stream and event (CUstream, CUevent), for work beside the default
// stream. Stream 0 is the default (legacy NULL) stream, on which every Launch, copy and fill of a Driver is queued.
type (
	Stream uintptr
	Event  uintptr
)

// Streams is the capability of a Driver that queues work on more than one stream: the GPU driver (cu.go). The
// emulator of the default build runs each launch as it is made and has only the default stream. Libraries that
// queue their own work (NCCL) take a Stream; events order it with the default stream's kernels. No method blocks
// the host.
type Streams interface {
	// NewStream makes a stream that does not synchronise with the default stream (CU_STREAM_NON_BLOCKING): its work
	// is ordered with the default stream's only by Wait. DestroyStream lets its queued work finish.
	NewStream() (Stream, error)
	DestroyStream(s Stream) error
	// NewEvent makes an event for ordering only (CU_EVENT_DISABLE_TIMING).
	NewEvent() (Event, error)
	DestroyEvent(ev Event) error
	// Record queues a record of ev on s: it completes when the work queued on s before it has.
	Record(ev Event, s Stream) error
	// Wait makes the work queued on s after it wait for ev's latest record, as it is when Wait is called
	// (cuStreamWaitEvent).
	Wait(s Stream, ev Event) error
}

// Open returns the driver named by dev: "emu" (default build) or "cuda" (a build with -tags cuda, on GPU 0).
func Open(dev string) (Driver, error) { return OpenLocal(dev, 0) }

// OpenLocal is Open for the process of local rank localRank among those a launcher (mpirun, srun) started on this
// machine: on "cuda" it opens GPU localRank mod the number of GPUs the process sees (CUDA_VISIBLE_DEVICES applies:
// a launcher that gives each process its own GPU leaves it one, GPU 0). The emulator ignores localRank.
func OpenLocal(dev string, localRank int) (Driver, error) {
	switch dev {
	case "emu":
		return openEmu()
	case "cuda":
		return openCUDA(localRank)
	}
	return nil, fmt.Errorf("cuda: unknown device %q (want emu or cuda)", dev)
}

// Scalar is an element type that can be copied to and from the device.
type Scalar interface {
	~float32 | ~float64 | ~int32 | ~uint32 | ~int64 | ~uint64 | ~uint8 | ~int8 | ~uint16 | ~int16
}

// Upload copies src to device memory at dst.
func Upload[T Scalar](d Driver, dst DevicePtr, src []T) error {
	if len(src) == 0 {
		return nil
	}
	return d.HtoD(dst, unsafe.Pointer(&src[0]), len(src)*int(unsafe.Sizeof(src[0])))
}

// Download copies len(dst) elements from device memory at src into dst.
func Download[T Scalar](d Driver, dst []T, src DevicePtr) error {
	if len(dst) == 0 {
		return nil
	}
	return d.DtoH(unsafe.Pointer(&dst[0]), src, len(dst)*int(unsafe.Sizeof(dst[0])))
}

// AllocFrom allocates device memory for src and uploads it.
func AllocFrom[T Scalar](d Driver, src []T) (DevicePtr, error) {
	var zero T
	n := len(src) * int(unsafe.Sizeof(zero))
	if n == 0 {
		n = int(unsafe.Sizeof(zero))
	}
	p, err := d.Alloc(n)
	if err != nil {
		return 0, err
	}
	if err := Upload(d, p, src); err != nil {
		d.Free(p)
		return 0, err
	}
	return p, nil
}
