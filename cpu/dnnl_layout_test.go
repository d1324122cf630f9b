//go:build cgo

package cpu

import (
	"math"
	"math/rand/v2"
	"testing"
	"unsafe"
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
