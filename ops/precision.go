package ops

import "fmt"

// Precision is the number format of the inputs to the matmul-heavy ops — convolutions, linear layers and the
// attention matmuls — with FP32 accumulation and FP32 everywhere else (master weights, gradients, optimizer, group
// norm statistics, softmax, the loss, the timestep embedding): the semantics of automatic mixed precision.
//
//	fp32  IEEE single precision (the default)
//	tf32  inputs rounded to TF32 (10-bit significand) on GPU tensor cores; GPUs only
//	bf16  inputs rounded to bfloat16 (8-bit significand, round to nearest even); CPUs with AVX512-BF16 or AMX, GPU
//	      tensor cores of compute capability 8.0 or newer
type Precision string

const (
	FP32 Precision = "fp32"
	TF32 Precision = "tf32"
	BF16 Precision = "bf16"
)

// Precisions lists the values of Precision, in the order the docs give them.
var Precisions = []Precision{FP32, TF32, BF16}

// ParsePrecision returns the Precision a config value or flag names.
func ParsePrecision(s string) (Precision, error) {
	for _, p := range Precisions {
		if string(p) == s {
			return p, nil
		}
	}
	return "", fmt.Errorf("precision %q: allowed: fp32, tf32, bf16", s)
}

// PrecisionSetter is a backend that can run its matmul-heavy ops at a reduced input precision. SetPrecision
// returns an error naming what is missing (the CPU instructions, the GPU's compute capability) when this backend
// cannot run p here; the backend then stays as it was. A backend that does not implement it runs FP32 only.
type PrecisionSetter interface {
	SetPrecision(p Precision) error
	Precision() Precision
}
