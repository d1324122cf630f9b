//go:build !cuda

package cuda

import (
	"flag"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/ddpmgo/ddpm/ops"
	"github.com/ddpmgo/ddpm/rng"
)

// The emulator side of the conformance suite: the backend that conformance_test.go runs on in the default build,
// the kernels that ops.Backend does not reach (fused kernels, the tensor-core rounding, the dropout mask, the noise
// injection and the batch gather), each against its unfused form or its Go definition, and the coverage check that
// every kernel of kernels/*.cu is launched by some test.

// emulated is true: testBackend is the CPU emulator.
const emulated = true

// launches notes the kernels launched through every testBackend of this process, and ran the tests that made one
// (by top-level name), for TestEmuKernelCoverage.
var launches = struct {
	sync.Mutex
	seen map[string]bool
	ran  map[string]bool
}{seen: map[string]bool{}, ran: map[string]bool{}}

// recorder is a Driver that notes the kernels it launches in launches.
type recorder struct{ Driver }

func (r recorder) Launch(kernel string, grid, block Dim3, smem int, args ...Arg) error {
	launches.Lock()
	launches.seen[kernel] = true
	launches.Unlock()
	return r.Driver.Launch(kernel, grid, block, smem, args...)
}

// testBackend returns a backend over a guarded emulator (every allocation in guard bands checked after each
// launch) whose launches are noted for TestEmuKernelCoverage, closed when t ends.
func testBackend(t testing.TB) *Backend {
	t.Helper()
	be := guardedBackend(t, nil)
	launches.Lock()
	launches.ran[strings.SplitN(t.Name(), "/", 2)[0]] = true
	launches.Unlock()
	return be
}

// guardedBackend is a backend over a guarded emulator whose launches are noted for TestEmuKernelCoverage, through
// the driver that wrap builds around the recorder (nil: the recorder itself), closed when t ends.
func guardedBackend(t testing.TB, wrap func(Driver) Driver) *Backend {
	t.Helper()
	emu := NewEmulator(EmuOptions{Workers: 2, Guard: true})
	var d Driver = recorder{emu}
	if wrap != nil {
		d = wrap(d)
	}
	be, err := NewBackend(d)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		be.Close()
		emu.Close()
	})
	return be
}

// conv1x1Probe runs two 1x1 convolutions on be at its precision: in (one channel, len(in) pixels) with weight 1,
// returning each pixel as the kernels round it, and the two channels (1, 2^-12) with weights 1, returning their sum
// (1 + 2^-12 when the accumulation is FP32).
func conv1x1Probe(t *testing.T, be *Backend, in []float32) (got []float32, sum float32) {
	t.Helper()
	s := ops.ConvShape{N: 1, Cin: 1, H: 1, W: len(in), Cout: 1, K: 1, Stride: 1, Pad: 0}
	x, w, y := be.Alloc(len(in)), be.Alloc(1), be.Alloc(len(in))
	be.Upload(x, in)
	be.Upload(w, []float32{1})
	be.Conv2D(s, x, w, nil, y)
	got = make([]float32, len(in))
	be.Download(got, y)
	s2 := ops.ConvShape{N: 1, Cin: 2, H: 1, W: 1, Cout: 1, K: 1, Stride: 1, Pad: 0}
	x2, w2, y2 := be.Alloc(2), be.Alloc(2), be.Alloc(1)
	be.Upload(x2, []float32{1, float32(math.Ldexp(1, -12))})
	be.Upload(w2, []float32{1, 1})
	be.Conv2D(s2, x2, w2, nil, y2)
	sums := make([]float32, 1)
	be.Download(sums, y2)
	if err := be.Sync(); err != nil {
		t.Fatal(err)
	}
	return got, sums[0]
}

// TestEmuConvTF32Rounding checks the emulated tensor-core numerics against the TF32 definition: a 1x1 convolution
// with weight 1 returns its input rounded to a 10-bit mantissa, to nearest with ties away from zero
// (cvt.rna.tf32.f32), and sums in FP32 (not TF32). The FP32 kernels return the inputs unchanged.
func TestEmuConvTF32Rounding(t *testing.T) {
	p := func(e int) float32 { return float32(math.Ldexp(1, e)) }
	in := []float32{1 + p(-11), 1 + p(-12), 1 + 3*p(-12), -(1 + p(-11)), 1 + p(-10) + p(-11), 3, p(-130) * 3}
	want := []float32{1 + p(-10), 1, 1 + p(-10), -(1 + p(-10)), 1 + p(-9), 3, p(-130) * 3}
	for _, tc := range []bool{false, true} {
		be := testBackend(t)
		if tc {
			if err := be.SetPrecision(ops.TF32); err != nil {
				t.Fatal(err)
			}
		}
		// 1·1 + 1·2^-12 = 1 + 2^-12 is exact in FP32 but not in TF32.
		got, sum := conv1x1Probe(t, be, in)
		for i := range in {
			w := in[i]
			if tc {
				w = want[i]
			}
			if got[i] != w {
				t.Errorf("tensor cores %v: 1x1 conv of %.10g with weight 1 = %.10g, want %.10g", tc, in[i], got[i], w)
			}
		}
		if sum != 1+p(-12) {
			t.Errorf("tensor cores %v: 1 + 2^-12 summed to %.10g, want %.10g (FP32 accumulation)", tc, sum, 1+p(-12))
		}
	}
}

// TestEmuConvBF16Rounding: at BF16 a 1x1 convolution with weight 1 returns its input rounded to bfloat16 (8-bit
// significand, 7 bits stored: an ulp of 2^-7 at 1; to nearest, ties to even), and sums in FP32: 1 + 2^-8 (a tie)
// goes to 1, 1 + 3·2^-8 to 1 + 2^-6, and 1 + 2^-12, both terms exact in bfloat16, survives the sum.
func TestEmuConvBF16Rounding(t *testing.T) {
	p := func(e int) float32 { return float32(math.Ldexp(1, e)) }
	in := []float32{1 + p(-7), 1 + p(-8), 1 + 3*p(-8), -(1 + 3*p(-8)), 1 + p(-8) + p(-12), 3, p(-130) * 3, 2 - p(-9)}
	want := []float32{1 + p(-7), 1, 1 + p(-6), -(1 + p(-6)), 1 + p(-7), 3, p(-130) * 3, 2}
	be := testBackend(t)
	if err := be.SetPrecision(ops.BF16); err != nil {
		t.Fatal(err)
	}
	got, sum := conv1x1Probe(t, be, in)
	for i := range in {
		if got[i] != want[i] {
			t.Errorf("bf16: 1x1 conv of %.10g with weight 1 = %.10g, want %.10g", in[i], got[i], want[i])
		}
	}
	if sum != 1+p(-12) {
		t.Errorf("bf16: 1 + 2^-12 summed to %.10g, want %.10g (FP32 accumulation)", sum, 1+p(-12))
	}
}

// TestEmuDropoutMask checks the mask against package rng directly: y[i] = x[i]/(1−rate) exactly where
// rng.Uniform(seed, StreamDropout, offset+i) ≥ rate, 0 elsewhere.
func TestEmuDropoutMask(t *testing.T) {
	be := testBackend(t)
	const n, rate, seed, off = 3001, 0.3, 99, 1<<33 + 5
	xs := make([]float32, n)
	for i := range xs {
		xs[i] = float32(i%17) - 8.5
	}
	x, y := be.Alloc(n), be.Alloc(n)
	be.Upload(x, xs)
	be.Dropout(rate, seed, off, x, y)
	got := make([]float32, n)
	be.Download(got, y)
	if err := be.Sync(); err != nil {
		t.Fatal(err)
	}
	keep := float32(1 / (1 - float64(float32(rate))))
	kept := 0
	for i := range got {
		w := float32(0)
		if rng.Uniform(seed, rng.StreamDropout, off+uint64(i)) >= rate {
			w = xs[i] * keep
			kept++
		}
		if got[i] != w {
			t.Fatalf("element %d: %v, want %v", i, got[i], w)
		}
	}
	if kept < n/2 || kept > n*9/10 { // 70% expected; a mask of all or none means the comparison is wrong
		t.Fatalf("kept %d of %d at rate %v", kept, n, rate)
	}
}

// TestEmuKernelCoverage fails when a kernel of kernels/*.cu was launched by none of the tests it lists (the
// emulator's self-test kernels, emu_test_*, are covered by emu_test.go). It runs those that have not run yet in
// this process, and all of them when -run or -skip may have run a part of one.
func TestEmuKernelCoverage(t *testing.T) {
	filtered := false
	for _, f := range []string{"test.run", "test.skip"} {
		if fl := flag.Lookup(f); fl != nil && fl.Value.String() != "" {
			filtered = true
		}
	}
	tests := []struct {
		name string
		f    func(*testing.T)
	}{
		{"TestConformance", TestConformance}, {"TestConvTF32Conformance", TestConvTF32Conformance},
		{"TestNormalMatchesRNG", TestNormalMatchesRNG}, {"TestTimestepsMatchRNG", TestTimestepsMatchRNG},
		{"TestGatherEpochMatchesData", TestGatherEpochMatchesData},
		{"TestTCProbeMMA", TestTCProbeMMA}, {"TestTCProbeMMAK4", TestTCProbeMMAK4},
		{"TestTCProbeLdmatrix", TestTCProbeLdmatrix}, {"TestTCProbeCpAsync", TestTCProbeCpAsync},
		{"TestConvBF16Conformance", TestConvBF16Conformance}, {"TestTCProbeMMABF16", TestTCProbeMMABF16},
		{"TestTCProbeCvtBF16", TestTCProbeCvtBF16}, {"TestTCProbeLdmatrixB16", TestTCProbeLdmatrixB16},
		{"TestTCProbeLdmatrixMMABF16", TestTCProbeLdmatrixMMABF16}, {"TestGemmBF16", TestGemmBF16},
		{"TestLinearAttentionBF16Conformance", TestLinearAttentionBF16Conformance},
		{"TestPackConvWeights", TestPackConvWeights},
	}
	for _, tc := range tests {
		launches.Lock()
		ran := launches.ran[tc.name]
		launches.Unlock()
		if filtered || !ran {
			t.Run(tc.name, tc.f)
		}
	}
	var missing []string
	launches.Lock()
	for _, k := range EmuKernels() {
		if !strings.HasPrefix(k, "emu_test_") && !launches.seen[k] {
			missing = append(missing, k)
		}
	}
	launches.Unlock()
	slices.Sort(missing)
	if len(EmuKernels()) < 40 || len(missing) > 0 {
		t.Fatalf("%d kernels registered; launched by no test: %v", len(EmuKernels()), missing)
	}
}
