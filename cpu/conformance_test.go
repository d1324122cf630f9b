package cpu

import (
	"strings"
	"testing"

	"github.com/ddpmgo/ddpm/ops"
	"github.com/ddpmgo/ddpm/ops/opstest"
)

// TestConformance runs the backend-independent suite with the float32 backend under
// test and the float64 backend as the reference: a precision check of every op.
func TestConformance(t *testing.T) {
	opstest.Run(t, New(), New64())
}

// TestConformanceRowBlocks runs the convolution cases with one output row per im2col
// block (on both sides; TestConv2DMatchesLoops checks the float64 blocks against plain
// loops).
func TestConformanceRowBlocks(t *testing.T) {
	got, ref := New(), New64()
	for _, c := range opstest.Cases() {
		if strings.HasPrefix(c.Name, "Conv2D/") {
			t.Run(c.Name, func(t *testing.T) { withColBlock(1, func() { opstest.RunCase(t, c, got, ref) }) })
		}
	}
}

// TestConformanceShifted runs the convolution cases with every stride-1 "same"
// convolution on the shifted-GEMM path (convshift.go), on both sides.
func TestConformanceShifted(t *testing.T) {
	got, ref := New(), New64()
	for _, c := range opstest.Cases() {
		if strings.HasPrefix(c.Name, "Conv2D/") {
			t.Run(c.Name, func(t *testing.T) { withShiftMin(1, func() { opstest.RunCase(t, c, got, ref) }) })
		}
	}
}

// bf16Backend returns the float32 backend at precision bf16, or skips the test naming what this machine lacks.
func bf16Backend(t *testing.T) *Backend[float32] {
	t.Helper()
	be := New()
	if err := be.SetPrecision(ops.BF16); err != nil {
		if avx, amx := cpuBF16(); !avx && !amx {
			t.Skipf("this CPU has no bf16 instructions (neither avx512_bf16 nor amx_bf16), so the bf16 kernels cannot run here: %v", err)
		}
		t.Fatal(err)
	}
	t.Logf("bf16 convolutions: oneDNN %s", be.ConvImpl())
	return be
}

// TestConformanceBF16 runs the whole suite with the float32 backend at bf16 against the float64 backend at bf16 (the
// same operands rounded to bf16 in Go, float64 arithmetic), at the FP32 tolerances: the products are the same
// numbers on both sides, so only the float32 accumulation differs. It checks that exactly the operands bf16.go names
// are rounded, to nearest even, that everything else stays FP32, and that the sums are FP32. Needs AVX512-BF16 or
// AMX; without them it says so and skips (TestConformanceBF16Reference runs everywhere).
func TestConformanceBF16(t *testing.T) {
	got := bf16Backend(t)
	ref := New64()
	if err := ref.SetPrecision(ops.BF16); err != nil {
		t.Fatal(err)
	}
	opstest.Run(t, got, ref)
}

// TestConformanceBF16VsFP32 compares the float32 backend at bf16 with itself at fp32, within the bf16 bands
// (opstest.BF16Band): what bf16 costs on this CPU. Needs AVX512-BF16 or AMX, as TestConformanceBF16.
func TestConformanceBF16VsFP32(t *testing.T) {
	opstest.Run(t, bf16Backend(t), New(), opstest.Only(opstest.Uses("Conv2D", "Linear", "Attention")), opstest.BF16())
}

// TestConformanceBF16Reference checks the bf16 bands on any CPU: the float64 backend at bf16 (pure Go rounding)
// against itself at fp32.
func TestConformanceBF16Reference(t *testing.T) {
	got := New64()
	if err := got.SetPrecision(ops.BF16); err != nil {
		t.Fatal(err)
	}
	opstest.Run(t, got, New64(), opstest.Only(opstest.Uses("Conv2D", "Linear", "Attention")), opstest.BF16())
}
