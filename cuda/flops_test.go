package cuda

import (
	"testing"

	"github.com/ddpmgo/ddpm/ops"
)

// Work counts for the device benchmarks (bench_cuda_test.go): floating-point operations of the GEMM-shaped ops
// (a multiply-add counts 2) and the bytes that the memory-bound ops must move at least (each input read once, each
// output written once; an accumulated output is read and written).

// convFLOPs is the work of one convolution pass; forward, backward-data and backward-weight are GEMMs of the same
// M·N·K (all taps counted, padding included, as ops.ConvShape.FLOPs).
func convFLOPs(s ops.ConvShape) float64 { return float64(s.FLOPs()) }

// convBytes: x, w and y once each (forward).
func convBytes(s ops.ConvShape) float64 {
	return 4 * float64(s.N*s.Cin*s.H*s.W+s.Cout*s.Cin*s.K*s.K+s.N*s.Cout*s.OutH()*s.OutW())
}

// linearFLOPs: y = x·wᵀ, n·out dot products of length in.
func linearFLOPs(n, in, out int) float64 { return 2 * float64(n) * float64(in) * float64(out) }

// attnFLOPs: per (sample, head) the forward has two L×L×D GEMMs (q·kᵀ and P·v), the backward four (dv, dP, dq, dk).
func attnFLOPs(s ops.AttnShape, backward bool) float64 {
	g := 2.0
	if backward {
		g = 4
	}
	return g * 2 * float64(s.N*s.Heads) * float64(s.L) * float64(s.L) * float64(s.D)
}

// gnBytes: forward reads x and writes y; backward reads x and dy and accumulates dx.
func gnBytes(s ops.NormShape, backward bool) float64 {
	n := float64(s.N * s.C * s.HW)
	if backward {
		return 4 * 4 * n
	}
	return 4 * 2 * n
}

// moveBytes: ops that read `in` floats and write `out` floats (upsample, concat, transpose, dropout, embedding).
func moveBytes(in, out int) float64 { return 4 * float64(in+out) }

func TestWorkCounts(t *testing.T) {
	// The convolution count against a loop over the definition's multiply-adds.
	s := ops.ConvShape{N: 2, Cin: 3, H: 5, W: 7, Cout: 4, K: 3, Stride: 2, Pad: 1}
	var macs int
	for n := 0; n < s.N; n++ {
		for o := 0; o < s.Cout; o++ {
			for i := 0; i < s.OutH(); i++ {
				for j := 0; j < s.OutW(); j++ {
					macs += s.Cin * s.K * s.K
				}
			}
		}
	}
	if got := convFLOPs(s); got != float64(2*macs) {
		t.Errorf("convFLOPs(%+v) = %v, want %d", s, got, 2*macs)
	}
	if got, want := convBytes(s), 4.0*(2*3*5*7+4*3*9+2*4*3*4); got != want {
		t.Errorf("convBytes = %v, want %v", got, want)
	}
	// Attention: S = q·kᵀ is L·L dot products of length D per head.
	a := ops.AttnShape{N: 2, L: 5, Heads: 3, D: 4}
	if got, want := attnFLOPs(a, false), float64(2*(2*3)*(5*5*4)*2); got != want {
		t.Errorf("attnFLOPs forward = %v, want %v", got, want)
	}
	if attnFLOPs(a, true) != 2*attnFLOPs(a, false) {
		t.Errorf("attnFLOPs backward = %v, want twice the forward", attnFLOPs(a, true))
	}
	if got := linearFLOPs(3, 5, 7); got != 210 {
		t.Errorf("linearFLOPs(3, 5, 7) = %v, want 210", got)
	}
	if got := gnBytes(ops.NormShape{N: 1, C: 2, HW: 3, G: 1}, true); got != 96 {
		t.Errorf("gnBytes backward = %v, want 96", got)
	}
}
