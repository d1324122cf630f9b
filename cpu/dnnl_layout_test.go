//go:build cgo

package cpu

import (
	"math"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"unsafe"

	"github.com/ddpmgo/ddpm/ops"
)

// TestLayoutMatchesOneDNN: the two layout changes of dnnl_layout.c (NCHW f32 → NHWC bf16 for the bf16 primitives'
// inputs; NHWC f32 → NCHW f32, written or added, for their outputs) equal oneDNN's reorders between the same memory
// descriptors bit for bit, on shapes with and without whole 16×16 tiles (channels and pixels not multiples of 16,
// 3 channels, one sample) and on values that test the rounding: ties to even, the largest values below a carry,
// subnormals, ±0, ±Inf and NaN. Guard bands of 64 elements on both sides of each output must stay untouched.
func TestLayoutMatchesOneDNN(t *testing.T) {
	if !layoutAvailable() {
		t.Skip("dnnl_layout.c needs AVX-512 with BF16 (avx512_bf16), which this CPU lacks; oneDNN's reorders run instead")
	}
	shapes := [][4]int{{3, 64, 32, 32}, {2, 48, 9, 10}, {2, 3, 16, 16}, {1, 20, 4, 4}, {4, 256, 4, 4}, {5, 17, 3, 7}, {1, 16, 1, 1}}
	special := []float32{0, float32(math.Copysign(0, -1)), float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()),
		math.Float32frombits(0x3f808000), // 1 + 2⁻⁸: a tie, to even (down)
		math.Float32frombits(0x3f818000), // a tie, to even (up)
		math.Float32frombits(0x3f80ffff), math.Float32frombits(0x7f7fffff), math.Float32frombits(0x00000001),
		math.Float32frombits(0x807fffff), math.Float32frombits(0x00800000)}
	const guard = 64
	r := rand.New(rand.NewPCG(5, 6))
	for _, d := range shapes {
		n, c, h, w := d[0], d[1], d[2], d[3]
		size := n * c * h * w
		src := make([]float32, size)
		for i := range src {
			if r.IntN(8) == 0 {
				src[i] = special[r.IntN(len(special))]
			} else {
				src[i] = float32(r.NormFloat64())
			}
		}
		// In: NCHW f32 → NHWC bf16.
		var out [2][]uint16
		for k := range out {
			out[k] = make([]uint16, size+2*guard)
			for i := range out[k] {
				out[k][i] = 0xbeef
			}
			if err := layoutTest(true, n, c, h, w, src, unsafe.Pointer(&out[k][guard]), false, k == 0); err != nil {
				t.Fatal(err)
			}
		}
		for i := range out[0] {
			if i < guard || i >= guard+size {
				if out[0][i] != 0xbeef {
					t.Fatalf("%v to NHWC bf16: write outside the output at %d", d, i-guard)
				}
			} else if out[0][i] != out[1][i] {
				t.Fatalf("%v to NHWC bf16: element %d is %#04x, oneDNN's %#04x", d, i-guard, out[0][i], out[1][i])
			}
		}
		// Out: NHWC f32 → NCHW f32, written and added.
		for _, acc := range []bool{false, true} {
			init := make([]float32, size+2*guard)
			for i := range init {
				init[i] = float32(r.NormFloat64())
			}
			var res [2][]float32
			for k := range res {
				res[k] = append([]float32(nil), init...)
				if err := layoutTest(false, n, c, h, w, src, unsafe.Pointer(&res[k][guard]), acc, k == 0); err != nil {
					t.Fatal(err)
				}
			}
			for i := range res[0] {
				a, b := math.Float32bits(res[0][i]), math.Float32bits(res[1][i])
				if i < guard || i >= guard+size {
					if a != math.Float32bits(init[i]) {
						t.Fatalf("%v to NCHW (acc %v): write outside the output at %d", d, acc, i-guard)
					}
				} else if a != b && !(math.IsNaN(float64(res[0][i])) && math.IsNaN(float64(res[1][i]))) {
					t.Fatalf("%v to NCHW (acc %v): element %d is %g, oneDNN's %g", d, acc, i-guard, res[0][i], res[1][i])
				}
			}
		}
	}
}

// BenchmarkLayout times the layout changes of dnnl_layout.c against oneDNN's reorders on a celeba32 activation
// (64×128×32×32):
//
//	go test ./cpu/ -run '^$' -bench Layout
func BenchmarkLayout(b *testing.B) {
	if !layoutAvailable() {
		b.Skip("dnnl_layout.c needs avx512_bf16")
	}
	const n, c, h, w = 64, 128, 32, 32
	src := make([]float32, n*c*h*w)
	dst := make([]float32, n*c*h*w)
	for _, toNHWC := range []bool{true, false} {
		for _, own := range []bool{true, false} {
			name := map[bool]string{true: "toNHWCbf16", false: "toNCHWacc"}[toNHWC] + map[bool]string{true: "/own", false: "/onednn"}[own]
			b.Run(name, func(b *testing.B) {
				b.SetBytes(int64(len(src)) * 4)
				for b.Loop() {
					if err := layoutTest(toNHWC, n, c, h, w, src, unsafe.Pointer(&dst[0]), !toNHWC, own); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// TestBF16BackwardDataAsForward: at bf16, a stride-1 convolution's backward-data runs as a forward convolution of dy
// with the flipped, transposed weights where oneDNN has a brgconv kernel for it (dnnl.c's asForward: AMX), and its
// dx (added to a non-zero dx) equals that of oneDNN's backward-data primitive on a plan created with the switch off,
// up to the order of the float32 sums (the operands are the same bf16 numbers): 3×3 same, 3×3 valid (pad 0, so
// padded by 2), 1×1, and a 512-channel layer.
func TestBF16BackwardDataAsForward(t *testing.T) {
	shapes := []ops.ConvShape{
		{N: 4, Cin: 64, H: 16, W: 16, Cout: 64, K: 3, Stride: 1, Pad: 1},
		{N: 2, Cin: 32, H: 10, W: 12, Cout: 48, K: 3, Stride: 1, Pad: 0},
		{N: 2, Cin: 96, H: 8, W: 8, Cout: 32, K: 1, Stride: 1, Pad: 0},
		{N: 2, Cin: 512, H: 8, W: 8, Cout: 256, K: 3, Stride: 1, Pad: 1},
	}
	on, off := bf16Backends(t, convAsForward)
	if !strings.HasPrefix(on.ConvImpl(), "brgconv") {
		t.Skipf("oneDNN's bf16 forward here is %s, not brgconv (AMX): backward-data stays oneDNN's", on.ConvImpl())
	}
	for _, s := range shapes {
		var dx [2][]float32
		for i, be := range []*Backend[float32]{on, off} {
			convAsForward(i == 0)
			r := rand.New(rand.NewPCG(uint64(s.Cin), 13)) // the same data on both backends
			up := func(n int) ops.Buf { return normalBuf(be, r, n) }
			nx := s.N * s.Cin * s.H * s.W
			x, w, dy, d := up(nx), up(s.Cout*s.Cin*s.K*s.K), up(s.N*s.Cout*s.OutH()*s.OutW()), up(nx)
			be.Conv2DBackward(s, x, w, dy, d, nil, nil)
			dx[i] = make([]float32, nx)
			be.Download(dx[i], d)
			convAsForward(true)
			name := be.dn.planImpl(s, 1)
			if as := strings.Contains(name, "(as forward)"); as != (i == 0) {
				t.Fatalf("%+v: backward-data runs %q with the switch %v", s, name, i == 0)
			}
		}
		// Both sum K = Cout·k² bf16 products in float32 in different orders.
		k := float64(s.Cout * s.K * s.K)
		for i := range dx[0] {
			a, b := float64(dx[0][i]), float64(dx[1][i])
			if tol := 4 * k * 0x1p-24 * (1 + math.Abs(b)); !(math.Abs(a-b) <= tol) { // NaN fails
				t.Fatalf("%+v: dx[%d] = %g as a forward convolution, %g by oneDNN's backward-data (tolerance %.2g)", s, i, a, b, tol)
			}
		}
	}
}

// TestBF16WeightGradSplit: at bf16 on more than one thread, oneDNN's AMX backward-weights runs as one single-threaded
// primitive per thread on a slice of the minibatch, the partial gradients added in slice order (dnnl.c's
// splitWeights), and its dw (added to a non-zero dw) equals that of the one multi-threaded primitive of a plan
// created with the switch off, up to the order of the float32 sums; with and without dx (backward-weights reading
// the dy that backward-data rounded, or rounding dy itself), on 3×3 same, 3×3 valid, 1×1 and a batch that the threads
// do not divide (not split); and the parts' geometries of partGeometry: narrow 3×3 images side by side
// (stackRows' copies, which start as NaNs: a separator left unwritten fails) and 1×1 convolutions' pixels as rows
// of 64. Runs at GOMAXPROCS ≥ 2 (set here), whatever the machine's cores; with OMP_THREAD_LIMIT=1 the plans run on
// one thread, unsplit, and the test checks that.
func TestBF16WeightGradSplit(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(max(2, runtime.GOMAXPROCS(0))))
	threads := min(runtime.GOMAXPROCS(0), ompThreadLimit()) // the plans' threads (dnnl.c caps them)
	// geometry: what the split plan's name says of dnnl.c's partGeometry ("" for images as they are).
	cases := []struct {
		s        ops.ConvShape
		geometry string
	}{
		{ops.ConvShape{N: 4, Cin: 64, H: 16, W: 16, Cout: 64, K: 3, Stride: 1, Pad: 1}, ""},
		{ops.ConvShape{N: 2 * threads, Cin: 32, H: 10, W: 12, Cout: 48, K: 3, Stride: 1, Pad: 0}, ""},
		{ops.ConvShape{N: 2 * threads, Cin: 96, H: 8, W: 8, Cout: 32, K: 1, Stride: 1, Pad: 0}, "rows of 64"},
		{ops.ConvShape{N: 2*threads + 1, Cin: 64, H: 8, W: 8, Cout: 64, K: 3, Stride: 1, Pad: 1}, ""},
		// 16 images a part: two stacked rows of 8; 6 images of 6×5: 12 would fit a row, 6 divide the part.
		{ops.ConvShape{N: 16 * threads, Cin: 64, H: 8, W: 8, Cout: 48, K: 3, Stride: 1, Pad: 1}, "8 images a row"},
		{ops.ConvShape{N: 6 * threads, Cin: 32, H: 6, W: 5, Cout: 32, K: 3, Stride: 1, Pad: 1}, "6 images a row"},
	}
	on, off := bf16Backends(t, convSplitWeights)
	if !strings.Contains(on.dn.probeImpl(2), "amx") {
		t.Skipf("oneDNN's bf16 backward-weights here is %s, not the AMX kernel: it stays one primitive", on.dn.probeImpl(2))
	}
	for _, c := range cases {
		s := c.s
		if !BF16WeightGrad(s) {
			t.Fatalf("%+v: not a bf16 weight-gradient shape", s)
		}
		for _, withDx := range []bool{true, false} {
			var dw [2][]float32
			for i, be := range []*Backend[float32]{on, off} {
				convSplitWeights(i == 0)
				r := rand.New(rand.NewPCG(uint64(s.Cin), 17)) // the same data on both backends
				up := func(n int) ops.Buf { return normalBuf(be, r, n) }
				nx, nw := s.N*s.Cin*s.H*s.W, s.Cout*s.Cin*s.K*s.K
				x, w, dy, d := up(nx), up(nw), up(s.N*s.Cout*s.OutH()*s.OutW()), up(nw)
				var dx ops.Buf
				if withDx {
					dx = up(nx)
				}
				be.Conv2DBackward(s, x, w, dy, dx, d, nil)
				dw[i] = make([]float32, nw)
				be.Download(dw[i], d)
				convSplitWeights(true)
				name := be.dn.planImpl(s, 2)
				split := strings.Contains(name, "× 1 thread")
				want := i == 0 && threads > 1 && s.N%threads == 0
				if split != want {
					t.Fatalf("%+v: backward-weights runs %q with the switch %v (split wanted: %v)", s, name, i == 0, want)
				}
				if g := strings.Contains(name, "a row") || strings.Contains(name, "rows of"); want && g != (c.geometry != "") ||
					want && !strings.Contains(name, c.geometry) {
					t.Fatalf("%+v: backward-weights runs %q, want the parts' images as %q", s, name, c.geometry)
				}
			}
			// Both sum K = N·OH·OW bf16 products in float32 in different orders.
			k := float64(s.N * s.OutH() * s.OutW())
			for i := range dw[0] {
				a, b := float64(dw[0][i]), float64(dw[1][i])
				if tol := 4 * k * 0x1p-24 * (1 + math.Abs(b)); !(math.Abs(a-b) <= tol) { // NaN fails
					t.Fatalf("%+v (dx %v): dw[%d] = %g split, %g by one primitive (tolerance %.2g)", s, withDx, i, a, b, tol)
				}
			}
		}
	}
}

// bf16Backends returns two backends at precision bf16 whose plans are created with one of dnnl.c's switches
// (convAsForward, convSplitWeights) on and off; the switch is left on. Skips on a CPU without bf16 instructions.
func bf16Backends(t *testing.T, set func(bool)) (on, off *Backend[float32]) {
	mk := func(v bool) *Backend[float32] {
		set(v)
		defer set(true)
		be := New()
		if err := be.SetPrecision(ops.BF16); err != nil {
			t.Skipf("needs AVX512-BF16 or AMX: %v", err)
		}
		return be
	}
	return mk(true), mk(false)
}
