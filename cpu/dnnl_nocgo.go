//go:build !cgo

package cpu

import (
	"errors"

	"github.com/ddpmgo/ddpm/ops"
)

// Without cgo there is no oneDNN: convolution stays on the GEMM code of conv.go.
type dnnlState struct{ bf16 bool }

func newDNNL[T Float]() *dnnlState { return nil }

func dnnlConvFwd[T Float](*dnnlState, ops.ConvShape, []T, []T, []T, []T, bool)           {}
func dnnlKeep[T Float](*dnnlState, ops.ConvShape, []T, []T)                              {}
func dnnlConvBwdData[T Float](*dnnlState, ops.ConvShape, []T, []T, []T, bool, []float64) {}
func dnnlConvBwdWeights[T Float](*dnnlState, ops.ConvShape, []T, []T, []T, []T, bool, bool, []float64) {
}
func dnnlDySums(*dnnlState, ops.ConvShape, bool) bool { return false }
func (d *dnnlState) sumsBuf(int) []float64            { return nil }

func (d *dnnlState) probe(bool) ([3]string, error) {
	return [3]string{}, errors.New("built without cgo: no oneDNN")
}

func dnnlMatmulBF16[T Float](*dnnlState, mmKey, []T, []T, []T) {}

func dnnlWritesDx(*dnnlState, ops.ConvShape) bool { return false }

func layoutAvailable() bool { return false }
