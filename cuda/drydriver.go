package cuda

import (
	"fmt"
	"unsafe"
)

// DryDriver is a Driver that runs nothing: it hands out addresses without memory, copies and fills nothing (a
// download reads zeros), and can note every launch, copy and fill (Record). The launch sequence of a step does not
// depend on the values computed (as train's launch golden relies on), so a step traced over it is the step a GPU
// would run, and its allocations are the GPU's: it keeps the live bytes and their peak, so that a step's device
// memory is measured without the memory (a celeba32 step at batch 256, several GB of activations, traces on a small
// machine). Its tensor cores are on, so every precision's kernels are selected as on a GPU of compute capability 8.0.
type DryDriver struct {
	// Memory is the total MemInfo reports (0: DryMemory); free is Memory minus the live bytes.
	Memory int64
	// Record, when set, is called for every launch and for every copy and fill (as a launch of the pseudo-kernel
	// DryHtoD, DryDtoH, DryDtoD or DryMemset with one I64 argument, its bytes).
	Record func(kernel string, grid, block Dim3, sharedBytes int, args []Arg)

	next       DevicePtr
	live       map[DevicePtr]int
	used, peak int64
}

// DryMemory is what a DryDriver's MemInfo reports by default: an 80 GB H100.
const DryMemory = 80 << 30

// The pseudo-kernels a DryDriver's Record sees for copies and fills.
const (
	DryHtoD   = "HtoD"
	DryDtoH   = "DtoH"
	DryDtoD   = "DtoD"
	DryMemset = "Memset32"
)

var _ Driver = (*DryDriver)(nil)

// Name returns "dry".
func (d *DryDriver) Name() string { return "dry" }

// Alloc returns an address 256-byte aligned after the previous allocation's end (addresses are never reused), and
// counts bytes as live.
func (d *DryDriver) Alloc(bytes int) (DevicePtr, error) {
	if bytes <= 0 {
		return 0, fmt.Errorf("dry: alloc of %d bytes", bytes)
	}
	if d.next == 0 {
		d.next = 1 << 32
		d.live = map[DevicePtr]int{}
	}
	p := d.next
	d.next += DevicePtr(roundUp(bytes, 256))
	d.live[p] = bytes
	d.used += int64(bytes)
	d.peak = max(d.peak, d.used)
	return p, nil
}

// Free subtracts the allocation's bytes from the live ones.
func (d *DryDriver) Free(p DevicePtr) error {
	n, ok := d.live[p]
	if !ok {
		return fmt.Errorf("dry: free of %#x, which this driver did not allocate (or freed already)", uintptr(p))
	}
	delete(d.live, p)
	d.used -= int64(n)
	return nil
}

// Sync returns nil; Close forgets nothing (the counts stay readable).
func (d *DryDriver) Sync() error  { return nil }
func (d *DryDriver) Close() error { return nil }

// TensorCores is true.
func (d *DryDriver) TensorCores() bool { return true }

// MemUsed is the live bytes: the sum of the sizes of the allocations not yet freed.
func (d *DryDriver) MemUsed() int64 { return d.used }

// MemPeak is the most bytes that were live at once since the driver was made (or since ResetPeak).
func (d *DryDriver) MemPeak() int64 { return d.peak }

// ResetPeak starts a new peak from the live bytes.
func (d *DryDriver) ResetPeak() { d.peak = d.used }

// MemInfo reports Memory (DryMemory when 0) as the total, and it less the live bytes as free.
func (d *DryDriver) MemInfo() (free, total int64, err error) {
	total = d.Memory
	if total == 0 {
		total = DryMemory
	}
	return total - d.used, total, nil
}

// DtoH writes zeros to dst.
func (d *DryDriver) DtoH(dst unsafe.Pointer, _ DevicePtr, n int) error {
	clear(unsafe.Slice((*byte)(dst), n))
	d.note(DryDtoH, n)
	return nil
}

// HtoD, DtoD and Memset32 do nothing but note themselves.
func (d *DryDriver) HtoD(_ DevicePtr, _ unsafe.Pointer, n int) error { d.note(DryHtoD, n); return nil }
func (d *DryDriver) DtoD(_, _ DevicePtr, n int) error                { d.note(DryDtoD, n); return nil }
func (d *DryDriver) Memset32(_ DevicePtr, _ uint32, n int) error     { d.note(DryMemset, 4*n); return nil }

func (d *DryDriver) note(op string, bytes int) {
	if d.Record != nil {
		d.Record(op, Dim3{}, Dim3{}, 0, []Arg{I64(int64(bytes))})
	}
}

// Launch notes the launch (a copy of args) and runs nothing.
func (d *DryDriver) Launch(kernel string, grid, block Dim3, sharedBytes int, args ...Arg) error {
	if d.Record != nil {
		d.Record(kernel, grid, block, sharedBytes, append([]Arg(nil), args...))
	}
	return nil
}
