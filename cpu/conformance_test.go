package cpu

import (
	"strings"
	"testing"

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
