//go:build !cuda

package cuda

import (
	"fmt"
	"io/fs"
	"math"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/ddpmgo/ddpm/cpu"
	"github.com/ddpmgo/ddpm/kernels"
	"github.com/ddpmgo/ddpm/ops"
	"github.com/ddpmgo/ddpm/ops/opstest"
	"github.com/ddpmgo/ddpm/rng"
)

// Conformance of the kernels of conv2d.cu, groupnorm.cu, linear.cu, embed.cu, resample.cu, concat.cu, attention.cu
// and dropout.cu: on the emulator (guarded allocations, checked after every launch) against the float64 CPU twin,
// through the cases of ops/opstest (which add guard bands, check that inputs stay unchanged, that outputs are
// overwritten and gradients accumulated) plus the cases below, each with its tolerance and the reason for it.

// restFiles are the kernel sources whose kernels these tests must all launch (TestEmuRestKernelCoverage).
var restFiles = []string{"conv2d.cu", "groupnorm.cu", "linear.cu", "embed.cu", "resample.cu", "concat.cu",
	"attention.cu", "dropout.cu"}

// restMethods are the ops.Backend methods implemented by those kernels.
var restMethods = []string{"Conv2D", "Conv2DBackward", "GroupNorm", "GroupNormBackward", "Linear", "LinearBackward",
	"TimestepEmbedding", "Upsample2x", "Upsample2xBackward", "Concat", "ConcatBackward", "AddChannel", "ChannelSum",
	"Transpose", "TransposeBackward", "Attention", "AttentionBackward", "Dropout", "DropoutBackward"}

// restLaunches notes the kernels launched by the backends of these tests.
var restLaunches = struct {
	sync.Mutex
	seen map[string]bool
}{seen: map[string]bool{}}

// restRan notes which tests of this file have run in this process (TestEmuRestKernelCoverage runs the others only
// if they have not).
var restRan sync.Map

type restRecorder struct{ Driver }

func (r restRecorder) Launch(kernel string, grid, block Dim3, smem int, args ...Arg) error {
	restLaunches.Lock()
	restLaunches.seen[kernel] = true
	restLaunches.Unlock()
	return r.Driver.Launch(kernel, grid, block, smem, args...)
}

// newRestBackend returns a backend over a guarded emulator, with TF32 convolutions if tc.
func newRestBackend(t testing.TB, tc bool) *Backend {
	t.Helper()
	emu := NewEmulator(EmuOptions{Workers: 2, Guard: true})
	be, err := NewBackend(restRecorder{emu})
	if err != nil {
		t.Fatal(err)
	}
	be.SetTensorCores(tc)
	t.Cleanup(func() {
		be.FreeScratch()
		be.Close()
		emu.Close()
	})
	return be
}

// tolTF32 bounds the normalized error of a TF32 convolution against the float64 reference. Rounding each input to
// 10 mantissa bits (round to nearest) makes each product's relative error at most 2^-10 and about 2^-11·√(2/3)
// ≈ 4e-4 in RMS, independent from product to product, so the normalized error of a sum of many products is about
// 4e-4 too (plus the FP32 accumulation, ~1e-6); 2e-3 leaves a factor of 5 for the few-term sums of small shapes.
const (
	tolTF32 = 2e-3
	whyTF32 = "TF32 inputs (10-bit mantissa, relative error ≤ 2^-11 each, ~4e-4 RMS per product) with FP32 accumulation"
)

func hasOnly(methods, allowed []string) bool {
	for _, m := range methods {
		if !slices.Contains(allowed, m) {
			return false
		}
	}
	return true
}

// restCases are the opstest cases of restMethods and the extra ones of this family.
func restCases() []opstest.Case {
	var cs []opstest.Case
	for _, c := range opstest.Cases() {
		if hasOnly(c.Methods, restMethods) {
			cs = append(cs, c)
		}
	}
	return append(cs, extraCases()...)
}

func runCases(t *testing.T, be *Backend, cs []opstest.Case) {
	ref := cpu.New64()
	for _, c := range cs {
		t.Run(c.Name, func(t *testing.T) { opstest.RunCase(t, c, be, ref) })
	}
}

func TestEmuRestConformance(t *testing.T) {
	cs := restCases()
	covered := map[string]bool{}
	for _, c := range cs {
		for _, m := range c.Methods {
			covered[m] = true
		}
	}
	for _, m := range restMethods {
		if !covered[m] {
			t.Errorf("no conformance case exercises %s", m)
		}
	}
	runCases(t, newRestBackend(t, false), cs)
	restRan.Store("Conformance", true)
}

// TestEmuConvTF32Conformance: every convolution case again, on the tensor-core kernels.
func TestEmuConvTF32Conformance(t *testing.T) {
	var cs []opstest.Case
	for _, c := range restCases() {
		if slices.Contains(c.Methods, "Conv2D") || slices.Contains(c.Methods, "Conv2DBackward") {
			if strings.HasPrefix(c.Name, "Conv2D/9x32x16x16") {
				continue // 8 s on the emulator, whose tensor-core MMA runs on every lane; the FP32 run covers the shape
			}
			c.Name, c.Tol, c.Why = "TF32/"+c.Name, tolTF32, whyTF32
			cs = append(cs, c)
		}
	}
	if len(cs) < 5 {
		t.Fatalf("only %d convolution cases", len(cs))
	}
	runCases(t, newRestBackend(t, true), cs)
	restRan.Store("TF32", true)
}

// convCase is a Conv2D + Conv2DBackward case as opstest's, for the shapes below.
func convCase(s ops.ConvShape, bias bool, tol float64, why string) opstest.Case {
	xn, wn, yn := s.N*s.Cin*s.H*s.W, s.Cout*s.Cin*s.K*s.K, s.N*s.Cout*s.OutH()*s.OutW()
	return opstest.Case{
		Name:    fmt.Sprintf("Conv2D/%dx%dx%dx%d->%d/k%ds%dp%d/bias=%v", s.N, s.Cin, s.H, s.W, s.Cout, s.K, s.Stride, s.Pad, bias),
		Methods: []string{"Conv2D", "Conv2DBackward"}, Tol: tol, Why: why,
		Run: func(e *opstest.Env) {
			x, w := e.In("x", e.Randn(xn, 1)), e.In("w", e.Randn(wn, 0.3))
			var b, db ops.Buf
			if bias {
				b, db = e.In("b", e.Randn(s.Cout, 1)), e.Acc("db", e.Randn(s.Cout, 1))
			}
			e.B.Conv2D(s, x, w, b, e.Out("y", yn))
			dy := e.In("dy", e.Randn(yn, 1))
			e.B.Conv2DBackward(s, x, w, dy, e.Acc("dx", e.Randn(xn, 1)), e.Acc("dw", e.Randn(wn, 1)), db)
			e.B.Conv2DBackward(s, x, w, dy, nil, e.Acc("dw only", e.Randn(wn, 1)), nil)
		},
	}
}

const (
	tolSum = 3e-5
	whySum = "float32 sums of up to a few thousand terms in the kernel's order (error ~√n·2^-24), against float64"
)

func extraCases() []opstest.Case {
	var cs []opstest.Case
	for _, s := range []ops.ConvShape{
		// Cout = 65: two row tiles of 64, the second with one row; 1 image of 5x7 (odd, not square).
		{N: 1, Cin: 3, H: 5, W: 7, Cout: 65, K: 3, Stride: 1, Pad: 1},
		// Stride 2 on odd 9x9 with 3 images: 3·25 = 75 output columns (two column tiles); Cin·9 = 72 = 4.5 k-tiles.
		{N: 3, Cin: 8, H: 9, W: 9, Cout: 4, K: 3, Stride: 2, Pad: 1},
		// 1x1 stride 2 on 7x5.
		{N: 2, Cin: 5, H: 7, W: 5, Cout: 3, K: 1, Stride: 2, Pad: 0},
		// Weight gradient with split-K: 3·15·13 = 585 reduction terms → 2 chunks of 304 and 281 (convSplits).
		{N: 3, Cin: 4, H: 15, W: 13, Cout: 6, K: 3, Stride: 1, Pad: 1},
	} {
		cs = append(cs, convCase(s, s.Cout != 3, tolSum, whySum))
	}
	for _, s := range []ops.NormShape{
		{N: 3, C: 10, HW: 35, G: 2, Eps: 1e-5}, // 5 channels per group, 5x7
		{N: 1, C: 6, HW: 300, G: 3, Eps: 1e-5}, // groups of 600 elements: each thread strides over several
		{N: 2, C: 3, HW: 1, G: 3, Eps: 1e-3},   // one element per group: x̂ = 0, y = beta
	} {
		n := s.N * s.C * s.HW
		cs = append(cs, opstest.Case{Name: fmt.Sprintf("GroupNorm/%+v", s), Methods: []string{"GroupNorm", "GroupNormBackward"},
			Tol: tolSum, Why: "group means and variances over ≤ 600 terms, then 1/√: " + whySum,
			Run: func(e *opstest.Env) {
				x := e.In("x", shift(e.Randn(n, 0.5), 2)) // a mean far from 0 catches a one-pass variance
				gamma, beta := e.In("gamma", e.Randn(s.C, 1)), e.In("beta", e.Randn(s.C, 1))
				stats := e.Out("stats", 2*s.N*s.G)
				e.B.GroupNorm(s, x, gamma, beta, e.Out("y", n), stats)
				dy := e.In("dy", e.Randn(n, 1))
				e.B.GroupNormBackward(s, x, gamma, stats, dy, e.Acc("dx", e.Randn(n, 1)), e.Acc("dgamma", e.Randn(s.C, 1)), e.Acc("dbeta", e.Randn(s.C, 1)))
				e.B.GroupNormBackward(s, x, gamma, stats, dy, nil, nil, e.Acc("dbeta only", e.Randn(s.C, 1)))
			}})
	}
	for _, sh := range [][3]int{{65, 17, 70}, {2, 1000, 3}, {1, 3, 129}} { // n, in, out across the 64-tiles; long K
		n, in, out := sh[0], sh[1], sh[2]
		cs = append(cs, opstest.Case{Name: fmt.Sprintf("Linear/%dx%d->%d", n, in, out), Methods: []string{"Linear", "LinearBackward"},
			Tol: tolSum, Why: whySum,
			Run: func(e *opstest.Env) {
				x, w := e.In("x", e.Randn(n*in, 1)), e.In("w", e.Randn(out*in, 0.2))
				e.B.Linear(n, in, out, x, w, e.In("b", e.Randn(out, 1)), e.Out("y", n*out))
				dy := e.In("dy", e.Randn(n*out, 1))
				e.B.LinearBackward(n, in, out, x, w, dy, e.Acc("dx", e.Randn(n*in, 1)), e.Acc("dw", e.Randn(out*in, 1)), e.Acc("db", e.Randn(out, 1)))
				e.B.LinearBackward(n, in, out, x, w, dy, e.Acc("dx only", e.Randn(n*in, 1)), nil, nil)
			}})
	}
	for _, s := range []ops.AttnShape{
		{N: 1, L: 70, Heads: 3, D: 5}, // L across a 64-tile, D odd, three interleaved heads
		{N: 3, L: 2, Heads: 1, D: 65}, // D across a 64-tile
	} {
		n := s.N * s.L * s.Heads * s.D
		cs = append(cs, opstest.Case{Name: fmt.Sprintf("Attention/%+v", s), Methods: []string{"Attention", "AttentionBackward"},
			Tol: tolSum, Why: "softmax (float32 exp) between two GEMMs; " + whySum,
			Run: func(e *opstest.Env) {
				q, k, v := e.In("q", e.Randn(n, 2)), e.In("k", e.Randn(n, 2)), e.In("v", e.Randn(n, 1))
				p := e.Out("p", s.N*s.Heads*s.L*s.L)
				e.B.Attention(s, q, k, v, e.Out("o", n), p)
				do := e.In("do", e.Randn(n, 1))
				e.B.AttentionBackward(s, q, k, v, p, do, e.Acc("dq", e.Randn(n, 1)), e.Acc("dk", e.Randn(n, 1)), e.Acc("dv", e.Randn(n, 1)))
				e.B.AttentionBackward(s, q, k, v, p, do, nil, e.Acc("dk only", e.Randn(n, 1)), nil)
			}})
	}
	cs = append(cs,
		opstest.Case{Name: "Attention/large logits", Methods: []string{"Attention"}, Tol: tolSum,
			Why: "rows of logits near ±400: without the max subtraction exp overflows to Inf and P is NaN; " + whySum,
			Run: func(e *opstest.Env) {
				s := ops.AttnShape{N: 2, L: 9, Heads: 2, D: 4}
				n := s.N * s.L * s.Heads * s.D
				e.B.Attention(s, e.In("q", e.Randn(n, 20)), e.In("k", e.Randn(n, 20)), e.In("v", e.Randn(n, 1)),
					e.Out("o", n), e.Out("p", s.N*s.Heads*s.L*s.L))
			}},
		opstest.Case{Name: "Transpose/2x65x33", Methods: []string{"Transpose", "TransposeBackward"}, Tol: 1e-6,
			Why: "copies and one addition per element",
			Run: func(e *opstest.Env) {
				e.B.Transpose(2, 65, 33, e.In("x", e.Randn(2*65*33, 1)), e.Out("y", 2*65*33))
				e.B.TransposeBackward(2, 65, 33, e.In("dy", e.Randn(2*65*33, 1)), e.Acc("dx", e.Randn(2*65*33, 1)))
			}},
		opstest.Case{Name: "ChannelSum/2x3x1000", Methods: []string{"AddChannel", "ChannelSum"}, Tol: 1e-5,
			Why: "ChannelSum adds 1000 terms per row in a 32-lane order: " + whySum,
			Run: func(e *opstest.Env) {
				x, p := e.In("x", e.Randn(6000, 1)), e.In("p", e.Randn(6, 1))
				e.B.AddChannel(2, 3, 1000, x, p, e.Out("y", 6000))
				e.B.ChannelSum(2, 3, 1000, e.In("dy", e.Randn(6000, 1)), e.Acc("dp", e.Randn(6, 1)))
			}},
		opstest.Case{Name: "Concat/ca=0", Methods: []string{"Concat", "ConcatBackward"}, Tol: 1e-6, Why: "copies and one addition",
			Run: func(e *opstest.Env) {
				e.B.Concat(2, 0, 3, 5, e.In("a", nil), e.In("b", e.Randn(30, 1)), e.Out("y", 30))
				e.B.ConcatBackward(2, 0, 3, 5, e.In("dy", e.Randn(30, 1)), nil, e.Acc("db", e.Randn(30, 1)))
			}},
	)
	return cs
}

func shift(v []float32, d float32) []float32 {
	for i := range v {
		v[i] += d
	}
	return v
}

// TestEmuConvTF32Rounding checks the emulated tensor-core numerics against the TF32 definition: a 1x1 convolution
// with weight 1 returns its input rounded to a 10-bit mantissa, to nearest with ties away from zero
// (cvt.rna.tf32.f32), and sums in FP32 (not TF32). The FP32 kernels return the inputs unchanged.
func TestEmuConvTF32Rounding(t *testing.T) {
	p := func(e int) float32 { return float32(math.Ldexp(1, e)) }
	in := []float32{1 + p(-11), 1 + p(-12), 1 + 3*p(-12), -(1 + p(-11)), 1 + p(-10) + p(-11), 3, p(-130) * 3}
	want := []float32{1 + p(-10), 1, 1 + p(-10), -(1 + p(-10)), 1 + p(-9), 3, p(-130) * 3}
	for _, tc := range []bool{false, true} {
		be := newRestBackend(t, tc)
		s := ops.ConvShape{N: 1, Cin: 1, H: 1, W: len(in), Cout: 1, K: 1, Stride: 1, Pad: 0}
		x, w, y := be.Alloc(len(in)), be.Alloc(1), be.Alloc(len(in))
		be.Upload(x, in)
		be.Upload(w, []float32{1})
		be.Conv2D(s, x, w, nil, y)
		got := make([]float32, len(in))
		be.Download(got, y)
		// Two channels of TF32-exact values: 1·1 + 1·2^-12 = 1 + 2^-12 is exact in FP32 but not in TF32.
		s2 := ops.ConvShape{N: 1, Cin: 2, H: 1, W: 1, Cout: 1, K: 1, Stride: 1, Pad: 0}
		x2, w2, y2 := be.Alloc(2), be.Alloc(2), be.Alloc(1)
		be.Upload(x2, []float32{1, p(-12)})
		be.Upload(w2, []float32{1, 1})
		be.Conv2D(s2, x2, w2, nil, y2)
		sum := make([]float32, 1)
		be.Download(sum, y2)
		if err := be.Sync(); err != nil {
			t.Fatal(err)
		}
		for i := range in {
			w := in[i]
			if tc {
				w = want[i]
			}
			if got[i] != w {
				t.Errorf("tensor cores %v: 1x1 conv of %.10g with weight 1 = %.10g, want %.10g", tc, in[i], got[i], w)
			}
		}
		if sum[0] != 1+p(-12) {
			t.Errorf("tensor cores %v: 1 + 2^-12 summed to %.10g, want %.10g (FP32 accumulation)", tc, sum[0], 1+p(-12))
		}
	}
}

// TestEmuDropoutMask checks the mask against package rng directly: y[i] = x[i]/(1−rate) exactly where
// rng.Uniform(seed, StreamDropout, offset+i) ≥ rate, 0 elsewhere.
func TestEmuDropoutMask(t *testing.T) {
	be := newRestBackend(t, false)
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

// restKernels lists the kernels registered in restFiles (by their EMU_REGISTER lines).
func restKernels() []string {
	re := regexp.MustCompile(`EMU_REGISTER\((\w+)\)`)
	var names []string
	for _, f := range restFiles {
		src, err := fs.ReadFile(kernels.Sources, f)
		if err != nil {
			panic(err) // the files are embedded: cannot happen unless restFiles names a file that does not exist
		}
		for _, m := range re.FindAllSubmatch(src, -1) {
			names = append(names, string(m[1]))
		}
	}
	return names
}

// restKernel reports whether kernel belongs to restFiles: their coverage is checked by TestEmuRestKernelCoverage,
// so TestEmuKernelCoverage (conformance_test.go) leaves them out.
func restKernel(kernel string) bool {
	return slices.Contains(restKernels(), kernel)
}

// TestEmuRestKernelCoverage fails when a kernel of restFiles was launched by none of the tests above (it runs those
// that have not run yet in this process, e.g. under -run or -shuffle).
func TestEmuRestKernelCoverage(t *testing.T) {
	for name, f := range map[string]func(*testing.T){"Conformance": TestEmuRestConformance,
		"TF32": TestEmuConvTF32Conformance} {
		if _, ok := restRan.Load(name); !ok {
			t.Run(name, f)
		}
	}
	names := restKernels()
	var missing []string
	restLaunches.Lock()
	for _, k := range names {
		if !restLaunches.seen[k] {
			missing = append(missing, k)
		}
	}
	restLaunches.Unlock()
	sort.Strings(missing)
	if len(names) < 20 || len(missing) > 0 {
		t.Fatalf("%d kernels registered in %v; launched by no test: %v", len(names), restFiles, missing)
	}
}
