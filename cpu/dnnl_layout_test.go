//go:build cgo

package cpu

import (
	"fmt"
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
// subnormals, ±0, ±Inf and NaN; with dy's channel sums, those equal vec.Sum64's. Each shape runs with the output on
// a cache-line boundary and one element off it, with streaming stores allowed and not (the streamed paths need whole
// aligned lines: 32-channel multiples to NHWC, 16-pixel multiples to NCHW; {3,64,32,32}, {4,256,4,4} and {2,96,8,8}
// have them). Guard bands of 64 elements on both sides of each output must stay untouched.
func TestLayoutMatchesOneDNN(t *testing.T) {
	if !layoutAvailable() {
		t.Skip("dnnl_layout.c needs AVX-512 with BF16 (avx512_bf16), which this CPU lacks; oneDNN's reorders run instead")
	}
	defer layoutStream(true)
	shapes := [][4]int{{3, 64, 32, 32}, {2, 48, 9, 10}, {2, 3, 16, 16}, {1, 20, 4, 4}, {4, 256, 4, 4}, {5, 17, 3, 7},
		{1, 16, 1, 1}, {2, 96, 8, 8}, {2, 32, 3, 5}}
	special := []float32{0, float32(math.Copysign(0, -1)), float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()),
		math.Float32frombits(0x3f808000), // 1 + 2⁻⁸: a tie, to even (down)
		math.Float32frombits(0x3f818000), // a tie, to even (up)
		math.Float32frombits(0x3f80ffff), math.Float32frombits(0x7f7fffff), math.Float32frombits(0x00000001),
		math.Float32frombits(0x807fffff), math.Float32frombits(0x00800000)}
	const guard = 64
	r := rand.New(rand.NewPCG(5, 6))
	for _, d := range shapes {
		for _, stream := range []bool{true, false} {
			for _, off := range []int{0, 1} {
				layoutStream(stream)
				name := fmt.Sprintf("%v (streaming %v, %d off a line)", d, stream, off)
				checkLayout(t, name, d, off, r, special, guard)
			}
		}
	}
}

// checkLayout runs both layout changes of one shape against oneDNN's (TestLayoutMatchesOneDNN), each output starting
// off elements after a cache-line boundary, at least guard elements into its buffer.
func checkLayout(t *testing.T, name string, d [4]int, off int, r *rand.Rand, special []float32, guard int) {
	t.Helper()
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
	// start is the first index at least guard in whose element lies on a cache line, plus off.
	start := func(p unsafe.Pointer, elem int) int {
		i := guard
		for (uintptr(p)+uintptr(i*elem))%64 != 0 {
			i++
		}
		return i + off
	}
	// In: NCHW f32 → NHWC bf16.
	var out [2][]uint16
	var at [2]int
	for k := range out {
		out[k] = make([]uint16, size+2*guard+64)
		for i := range out[k] {
			out[k][i] = 0xbeef
		}
		at[k] = start(unsafe.Pointer(&out[k][0]), 2)
		if err := layoutTest(true, n, c, h, w, src, unsafe.Pointer(&out[k][at[k]]), false, k == 0); err != nil {
			t.Fatal(err)
		}
	}
	for i := range out[0] {
		if j := i - at[0]; j < 0 || j >= size {
			if out[0][i] != 0xbeef {
				t.Fatalf("%s to NHWC bf16: write outside the output at %d", name, j)
			}
		} else if out[0][i] != out[1][at[1]+j] {
			t.Fatalf("%s to NHWC bf16: element %d is %#04x, oneDNN's %#04x", name, j, out[0][i], out[1][at[1]+j])
		}
	}
	// The same with dy's channel sums (a convolution's bias gradient): the same bf16 copy, and each sum vec.Sum64's
	// float64 number (fastSum64 on this CPU) bit for bit -- on src, and on values whose exponents spread over 2¹²⁰,
	// so that float64 sums round and an order other than vec.Sum64's shows.
	withSums := make([]uint16, size+2*guard+64)
	sums := make([]float64, n*c)
	ws := start(unsafe.Pointer(&withSums[0]), 2)
	layoutSums(n, c, h*w, src, unsafe.Pointer(&withSums[ws]), sums)
	for j := range size {
		if withSums[ws+j] != out[0][at[0]+j] {
			t.Fatalf("%s to NHWC bf16 with sums: element %d is %#04x, without %#04x", name, j, withSums[ws+j], out[0][at[0]+j])
		}
	}
	checkSums(t, name, src, sums, n, c, h*w)
	wide := make([]float32, size)
	for i := range wide {
		wide[i] = float32(math.Ldexp(r.NormFloat64(), r.IntN(121)-60))
	}
	layoutSums(n, c, h*w, wide, unsafe.Pointer(&withSums[ws]), sums)
	checkSums(t, name+" (wide exponents)", wide, sums, n, c, h*w)
	// Out: NHWC f32 → NCHW f32, written and added: dnnl_layout.c's in place in a guarded buffer, oneDNN's on a copy
	// of the same starting values.
	for _, acc := range []bool{false, true} {
		init := make([]float32, size+2*guard+16)
		for i := range init {
			init[i] = float32(r.NormFloat64())
		}
		res := append([]float32(nil), init...)
		at := start(unsafe.Pointer(&res[0]), 4)
		ref := append([]float32(nil), init[at:at+size]...)
		if err := layoutTest(false, n, c, h, w, src, unsafe.Pointer(&res[at]), acc, true); err != nil {
			t.Fatal(err)
		}
		if err := layoutTest(false, n, c, h, w, src, unsafe.Pointer(&ref[0]), acc, false); err != nil {
			t.Fatal(err)
		}
		for i := range res {
			a := math.Float32bits(res[i])
			if j := i - at; j < 0 || j >= size {
				if a != math.Float32bits(init[i]) {
					t.Fatalf("%s to NCHW (acc %v): write outside the output at %d", name, acc, j)
				}
			} else if b := ref[j]; a != math.Float32bits(b) && !(math.IsNaN(float64(res[i])) && math.IsNaN(float64(b))) {
				t.Fatalf("%s to NCHW (acc %v): element %d is %g, oneDNN's %g", name, acc, j, res[i], b)
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

// checkSums: sums[i] is fastSum64 of src's i-th channel row (hw elements), bit for bit.
func checkSums(t *testing.T, name string, src []float32, sums []float64, n, c, hw int) {
	t.Helper()
	for i := range n * c {
		want := fastSum64(src[i*hw : (i+1)*hw])
		if got := sums[i]; math.Float64bits(got) != math.Float64bits(want) && !(math.IsNaN(got) && math.IsNaN(want)) {
			t.Fatalf("%s: the sum of sample %d's channel %d is %v, vec.Sum64's %v", name, i/c, i%c, got, want)
		}
	}
}

// TestConvBiasFromDySums: at bf16 the bias gradient that the pass changing dy to NHWC bf16 sums on the way
// (dnnl_layout.c's sum64, per sample and channel, then the samples in order) equals convBiasItem's bit for bit, added
// to a non-zero db: with backward-data (dy changed there), without it (in backward-weights), and with backward-data
// but no weight gradient; on shapes with and without whole 32-element runs of a channel (sum64's tail), channel counts
// that take the streamed and the 16-channel transposes, and a strided convolution.
func TestConvBiasFromDySums(t *testing.T) {
	if !layoutAvailable() {
		t.Skip("dnnl_layout.c needs AVX-512 with BF16 (avx512_bf16), which this CPU lacks; convBiasItem sums dy instead")
	}
	be := bf16Backend(t)
	shapes := []ops.ConvShape{
		{N: 4, Cin: 64, H: 16, W: 16, Cout: 64, K: 3, Stride: 1, Pad: 1},
		{N: 3, Cin: 32, H: 10, W: 12, Cout: 48, K: 3, Stride: 1, Pad: 0},
		{N: 4, Cin: 96, H: 8, W: 8, Cout: 40, K: 1, Stride: 1, Pad: 0},
		{N: 2, Cin: 64, H: 16, W: 16, Cout: 64, K: 3, Stride: 2, Pad: 1},
	}
	for _, s := range shapes {
		for _, pass := range []struct {
			name   string
			dx, dw bool
		}{{"dx and dw", true, true}, {"dw only", false, true}, {"dx only", true, false}} {
			if pass.dw && !BF16WeightGrad(s) {
				continue // oneDNN's backward-weights pass sums the bias itself (from the bf16 dy)
			}
			if !dnnlDySums(be.dn, s, pass.dx) {
				t.Fatalf("%+v (%s): no pass gives dy's sums here", s, pass.name)
			}
			r := rand.New(rand.NewPCG(uint64(s.Cout), 23))
			nx, nw, ny := s.N*s.Cin*s.H*s.W, s.Cout*s.Cin*s.K*s.K, s.N*s.Cout*s.OutH()*s.OutW()
			x, w, dy, db := normalBuf(be, r, nx), normalBuf(be, r, nw), normalBuf(be, r, ny), normalBuf(be, r, s.Cout)
			var dx, dw ops.Buf
			if pass.dx {
				dx = normalBuf(be, r, nx)
			}
			if pass.dw {
				dw = normalBuf(be, r, nw)
			}
			dys, want := make([]float32, ny), make([]float32, s.Cout)
			be.Download(dys, dy)
			be.Download(want, db)
			ohw := s.OutH() * s.OutW()
			for o := range want {
				var sum float64
				for n := range s.N {
					sum += fastSum64(dys[(n*s.Cout+o)*ohw : (n*s.Cout+o+1)*ohw])
				}
				want[o] += float32(sum)
			}
			be.Conv2DBackward(s, x, w, dy, dx, dw, db)
			got := make([]float32, s.Cout)
			be.Download(got, db)
			for o := range got {
				if math.Float32bits(got[o]) != math.Float32bits(want[o]) {
					t.Fatalf("%+v (%s): db[%d] = %g, convBiasItem's %g", s, pass.name, o, got[o], want[o])
				}
			}
		}
	}
}
