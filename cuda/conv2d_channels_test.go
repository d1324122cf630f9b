package cuda

import (
	"fmt"
	"strings"
	"testing"

	"github.com/ddpmgo/ddpm/ops"
)

// TestConvChannels: convChannels' padding on the shapes that motivated it (the 3-channel first and last convolutions,
// fashion32's 32 and 96 channels at bf16), and for every count up to 200 and kernel size up to 7 what the tensor-core
// kernels' k-loops assume of it (kernels/conv2d.cu, KSrcTC), checked from those conditions rather than the formula:
// whole pairs of chunks, a kernel row of an even number of chunks and at least a k-step (8 chunks), the least such
// count, and igemmTaps accepting it.
func TestConvChannels(t *testing.T) {
	for _, c := range []struct {
		c, k int
		p    ops.Precision
		want int
	}{
		{3, 3, ops.FP32, 4}, {3, 3, ops.TF32, 16}, {3, 3, ops.BF16, 32}, {32, 3, ops.TF32, 32}, {32, 3, ops.BF16, 32},
		{96, 3, ops.BF16, 96}, {72, 3, ops.BF16, 80}, {3, 1, ops.TF32, 8}, {3, 1, ops.BF16, 16}, {1, 2, ops.TF32, 16},
		{1, 5, ops.BF16, 16}, {5, 1, ops.FP32, 8},
	} {
		if got := convChannels(c.c, c.k, c.p); got != c.want {
			t.Errorf("convChannels(%d, %d, %s) = %d, want %d", c.c, c.k, c.p, got, c.want)
		}
	}
	for _, p := range []ops.Precision{ops.TF32, ops.BF16} {
		e := 16 / packElem(p) // elements per chunk
		const step = 8        // the k-step in chunks: 32 floats, 64 bfloat16
		fits := func(cp, k int) bool {
			return cp%e == 0 && (cp/e)%2 == 0 && (k == 1 || (k*cp/e)%2 == 0 && k*cp/e >= step)
		}
		for k := 1; k <= 7; k++ {
			taps := "kn"
			if k == 1 {
				taps = "k1"
			}
			for c := 1; c <= 200; c++ {
				cp := convChannels(c, k, p)
				if cp < c || !fits(cp, k) {
					t.Fatalf("%s: convChannels(%d, %d) = %d: not a whole pair of chunks with kernel rows of at least "+
						"a k-step", p, c, k, cp)
				}
				for less := cp - 1; less >= c; less-- {
					if fits(less, k) {
						t.Fatalf("%s: convChannels(%d, %d) = %d, but %d fits", p, c, k, cp, less)
					}
				}
				if tp := igemmTaps("test", ops.ConvShape{}, k, cp, p); tp != taps {
					t.Fatalf("%s: igemmTaps(k %d, Cp %d) = %s", p, k, cp, tp)
				}
			}
		}
	}
}

// TestIgemmTapsRefuses: a channel count the tensor-core k-loops cannot take (not padded by convChannels) panics with
// the op and the shape instead of launching a kernel that would read the wrong chunks.
func TestIgemmTapsRefuses(t *testing.T) {
	s := ops.ConvShape{N: 2, Cin: 3, H: 5, W: 7, Cout: 4, K: 3, Stride: 1, Pad: 1}
	for _, c := range []struct {
		k, cp int
		p     ops.Precision
	}{{3, 4, ops.TF32}, {3, 8, ops.TF32}, {3, 16, ops.BF16}, {1, 8, ops.BF16}, {1, 4, ops.TF32}, {3, 6, ops.FP32}} {
		msg := func() (msg string) {
			defer func() { msg = fmt.Sprint(recover()) }()
			igemmTaps("Conv2D", s, c.k, c.cp, c.p)
			return ""
		}()
		if !strings.Contains(msg, "Conv2D") || !strings.Contains(msg, fmt.Sprintf("%+v", s)) {
			t.Errorf("igemmTaps(k %d, Cp %d, %s): panic %q, want one naming the op and the shape", c.k, c.cp, c.p, msg)
		}
	}
}
