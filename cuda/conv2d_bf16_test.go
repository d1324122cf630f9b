package cuda

import (
	"math"
	"math/rand"
	"testing"

	"github.com/ddpmgo/ddpm/ops"
)

// TestConvPackBF16: the BF16 kernels' packing against its definition, bit for bit: conv2d_pack_act_bf16 writes x
// NHWC on the padded grid as bfloat16 (the upper half of bf16RNE: to nearest, ties to even; zeros in the padding and
// for channels past C, which are padded to 32 at K = 3: convChannels), conv2d_pack_w_bf16 the weights tap-major,
// flipped and transposed for backward-data. The inputs include ties, a value that rounds to infinity, infinity, NaN
// and -0.
func TestConvPackBF16(t *testing.T) {
	be := testBackend(t)
	if !be.Driver().TensorCores() {
		t.Skipf("%s has no tensor cores (compute capability < 8.0)", be.Name())
	}
	if err := be.SetPrecision(ops.BF16); err != nil {
		t.Fatal(err)
	}
	s := ops.ConvShape{N: 2, Cin: 5, H: 3, W: 4, Cout: 3, K: 3, Stride: 1, Pad: 1, PadEnd: 1}
	g := geomOf(s, be.Precision())
	if g.cinP != 32 || g.coutP != 32 {
		t.Fatalf("packed channels %d, %d; want 32, 32", g.cinP, g.coutP)
	}
	rnd := rand.New(rand.NewSource(11))
	special := []float32{1 + 0x1p-8, 1 + 3*0x1p-8, -(1 + 0x1p-8), 3.4e38, float32(math.Inf(1)),
		float32(math.NaN()), float32(math.Copysign(0, -1))}
	data := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rnd.NormFloat64())
			if i < len(special) {
				v[i] = special[i]
			}
		}
		return v
	}
	x, w := data(s.N*s.Cin*s.H*s.W), data(s.Cout*s.Cin*g.kk)
	xb, wb := be.Alloc(len(x)), be.Alloc(len(w))
	defer be.Free(xb)
	defer be.Free(wb)
	be.Upload(xb, x)
	be.Upload(wb, w)
	nAct, nW, nWf := s.N*g.hp*g.wp*g.cinP, s.Cout*g.kk*g.cinP, s.Cin*g.kk*g.coutP
	r := be.scratchRegions("TestConvPackBF16", 2*nAct, 2*nW, 2*nWf)
	be.packActs("TestConvPackBF16", s.N, []packJob{{xb.(*Buf).Ptr(), r[0], s.Cin, s.H, s.W, g.cinP, g.hp, g.wp, s.Pad, 1}}, 0, 0, 0, 0)
	be.packW("TestConvPackBF16", s, wb.(*Buf).Ptr(), r[1], g.cinP, false)
	be.packW("TestConvPackBF16", s, wb.(*Buf).Ptr(), r[2], g.coutP, true)
	if err := be.Sync(); err != nil {
		t.Fatal(err)
	}
	download := func(p DevicePtr, n int) []uint16 {
		out := make([]uint16, n)
		if err := Download(be.Driver(), out, p); err != nil {
			t.Fatal(err)
		}
		return out
	}
	bf := func(v float32) uint16 { return uint16(bf16RNE(v) >> 16) }
	act := download(r[0], nAct)
	for n := 0; n < s.N; n++ {
		for a := 0; a < g.hp; a++ {
			for b := 0; b < g.wp; b++ {
				for c := 0; c < g.cinP; c++ {
					var want uint16
					if h, v := a-s.Pad, b-s.Pad; c < s.Cin && h >= 0 && h < s.H && v >= 0 && v < s.W {
						want = bf(x[((n*s.Cin+c)*s.H+h)*s.W+v])
					}
					if got := act[((n*g.hp+a)*g.wp+b)*g.cinP+c]; got != want {
						t.Fatalf("act[%d][%d][%d][%d] = %#04x, want %#04x", n, a, b, c, got, want)
					}
				}
			}
		}
	}
	wk, wf := download(r[1], nW), download(r[2], nWf)
	for o := 0; o < s.Cout; o++ {
		for c := 0; c < g.cinP; c++ {
			for tap := 0; tap < g.kk; tap++ {
				var want uint16
				if c < s.Cin {
					want = bf(w[(o*s.Cin+c)*g.kk+tap])
				}
				if got := wk[(o*g.kk+tap)*g.cinP+c]; got != want {
					t.Fatalf("w[%d][tap %d][%d] = %#04x, want %#04x", o, tap, c, got, want)
				}
			}
		}
	}
	for c := 0; c < s.Cin; c++ {
		for o := 0; o < g.coutP; o++ {
			for tap := 0; tap < g.kk; tap++ {
				var want uint16
				if o < s.Cout {
					want = bf(w[(o*s.Cin+c)*g.kk+g.kk-1-tap])
				}
				if got := wf[(c*g.kk+tap)*g.coutP+o]; got != want {
					t.Fatalf("flipped w[%d][tap %d][%d] = %#04x, want %#04x", c, tap, o, got, want)
				}
			}
		}
	}
}
