package gpureport

import (
	"fmt"
	"unsafe"

	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/cuda"
	"github.com/ddpmgo/ddpm/ops"
	"github.com/ddpmgo/ddpm/train"
)

// dryDriver is a cuda.Driver that runs nothing: it hands out addresses without memory, copies and fills nothing
// (a download reads zeros), and notes every launch and fill while on. The launch sequence of a step does not depend
// on the values computed (as train's launch golden relies on), so a step traced over it is the step a GPU would run;
// it needs no memory, so a celeba32 step at batch 256 (several GB of activations) can be traced on a small machine.
type dryDriver struct {
	tc       bool
	next     cuda.DevicePtr
	used     int64
	on       bool
	launches []Launch
}

const dryMemory = 80 << 30 // what MemInfo reports: an 80 GB H100

func (d *dryDriver) Name() string { return "dry" }

func (d *dryDriver) Alloc(bytes int) (cuda.DevicePtr, error) {
	if bytes <= 0 {
		return 0, fmt.Errorf("dry: alloc of %d bytes", bytes)
	}
	if d.next == 0 {
		d.next = 1 << 32
	}
	p := d.next
	d.next += cuda.DevicePtr(roundUp(bytes, 256))
	d.used += int64(bytes)
	return p, nil
}

func (d *dryDriver) Free(cuda.DevicePtr) error { return nil }
func (d *dryDriver) Sync() error               { return nil }
func (d *dryDriver) Close() error              { return nil }
func (d *dryDriver) TensorCores() bool         { return d.tc }
func (d *dryDriver) MemUsed() int64            { return d.used }
func (d *dryDriver) MemInfo() (free, total int64, err error) {
	return dryMemory - d.used, dryMemory, nil
}
func (d *dryDriver) DtoH(dst unsafe.Pointer, _ cuda.DevicePtr, n int) error {
	clear(unsafe.Slice((*byte)(dst), n))
	d.note(DtoHKernel, n)
	return nil
}

func (d *dryDriver) HtoD(_ cuda.DevicePtr, _ unsafe.Pointer, n int) error {
	d.note(HtoDKernel, n)
	return nil
}
func (d *dryDriver) DtoD(_, _ cuda.DevicePtr, n int) error { d.note(DtoDKernel, n); return nil }
func (d *dryDriver) Memset32(_ cuda.DevicePtr, _ uint32, n int) error {
	d.note(MemsetKernel, 4*n)
	return nil
}

// note records a driver operation of bytes bytes.
func (d *dryDriver) note(op string, bytes int) {
	if d.on {
		d.launches = append(d.launches, Launch{Kernel: op, Args: []cuda.Arg{cuda.I64(int64(bytes))}})
	}
}

func (d *dryDriver) Launch(kernel string, grid, block cuda.Dim3, smem int, args ...cuda.Arg) error {
	if d.on {
		d.launches = append(d.launches, Launch{Kernel: kernel, Grid: grid, Block: block, Smem: smem,
			Args: append([]cuda.Arg(nil), args...)})
	}
	return nil
}

// Precision is one way to run the step: which kernels the backend selects, set by Setup on a fresh backend (nil:
// the backend cannot run in this precision, and the report says so).
type Precision struct {
	Name  string
	Setup func(be *cuda.Backend) error
}

// Precisions are the columns of the roofline: each ops.Precision, selected by cuda's SetPrecision (which chooses the
// convolution kernels; the linear layers and attention are FP32 in all three).
var Precisions = []Precision{
	{"fp32", func(be *cuda.Backend) error { return be.SetPrecision(ops.FP32) }},
	{"tf32", func(be *cuda.Backend) error { return be.SetPrecision(ops.TF32) }},
	{"bf16", func(be *cuda.Backend) error { return be.SetPrecision(ops.BF16) }},
}

// RecordStep traces one steady-state training step of cfg (train.TraceStep) with p's kernels over a dry driver and
// returns its launches and fills in order. images is the size of the random data set (0: train's default).
func RecordStep(cfg config.Config, p Precision, images int) ([]Launch, error) {
	if p.Setup == nil {
		return nil, fmt.Errorf("precision %s: no kernels", p.Name)
	}
	d := &dryDriver{tc: true}
	be, err := cuda.NewBackend(d)
	if err != nil {
		return nil, err
	}
	defer be.Close()
	if err := p.Setup(be); err != nil {
		return nil, fmt.Errorf("precision %s: %w", p.Name, err)
	}
	if err := train.TraceStep(cfg, be, images, func(on bool) { d.on = on }); err != nil {
		return nil, err
	}
	if len(d.launches) == 0 {
		return nil, fmt.Errorf("the traced step launched nothing")
	}
	return d.launches, nil
}

// GoldenLine prints a launch as train/testdata/launches_tiny_step.golden does.
func GoldenLine(l Launch) string {
	if l.IsDriverOp() {
		b, _ := argInt(l, 0)
		return fmt.Sprintf("%s %d bytes", l.Kernel, int64(b))
	}
	return fmt.Sprintf("%s %s", l.Kernel, goldenArgs(l))
}

func goldenArgs(l Launch) string {
	s := argString(l)
	// argString has no smem field; the golden puts it between block and args.
	for i := 0; i+6 <= len(s); i++ {
		if s[i:i+6] == " args=" {
			return fmt.Sprintf("%s smem=%d%s", s[:i], l.Smem, s[i:])
		}
	}
	return s
}
