package gpureport

import (
	"fmt"

	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/cuda"
	"github.com/ddpmgo/ddpm/ops"
	"github.com/ddpmgo/ddpm/train"
)

// dryDriver is cuda's DryDriver (nothing runs, no memory is held) with its launches, copies and fills noted while
// on. The launch sequence of a step does not depend on the values computed (as train's launch golden relies on),
// so a step traced over it is the step a GPU would run.
type dryDriver struct {
	*cuda.DryDriver
	on       bool
	launches []Launch
}

func newDryDriver() *dryDriver {
	d := &dryDriver{DryDriver: &cuda.DryDriver{}}
	d.Record = func(kernel string, grid, block cuda.Dim3, smem int, args []cuda.Arg) {
		if d.on {
			d.launches = append(d.launches, Launch{Kernel: kernel, Grid: grid, Block: block, Smem: smem, Args: args})
		}
	}
	return d
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
	d := newDryDriver()
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
