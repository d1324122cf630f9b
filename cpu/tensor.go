package cpu

import (
	"fmt"

	"gorgonia.org/tensor"

	"github.com/ddpmgo/ddpm/ops"
)

// Dense wraps a CPU buffer as a gorgonia.org/tensor dense tensor of the given shape,
// without copying: writes through either show in the other. It is for inspecting and
// interoperating (tensor's linear algebra, .npy and gob I/O) with host data; the
// trainer itself never needs it. The shape must cover the buffer exactly.
func Dense[T Float](b ops.Buf, shape ...int) (*tensor.Dense, error) {
	data := Data[T](b)
	n := 1
	for _, d := range shape {
		n *= d
	}
	if n != len(data) {
		return nil, fmt.Errorf("cpu: Dense shape %v holds %d elements, the buffer %d", shape, n, len(data))
	}
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(data)), nil
}
