//go:build cgo

package cpu

import (
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/ddpmgo/ddpm/ops"
)

// TestKeptConvInputBitExact: at bf16, Conv2D and Conv2DBackward from a kept x (KeepConvInput, then Kept) give the
// results of the same calls on x itself bit for bit — y; dx, dw and db accumulated into non-zero buffers — on the
// geometries the passes take: 3×3 at 32×32, narrow 3×3 images side by side and 1×1 pixels as rows of 64 in the split
// backward-weights pass (AMX), a batch the threads do not divide, a stride-1 valid convolution. The second backend
// has keeping switched off by precision alone (its KeptLen is checked). The storage starts as NaNs, so a part of it
// left unwritten shows.
func TestKeptConvInputBitExact(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(max(2, runtime.GOMAXPROCS(0))))
	be := New()
	if err := be.SetPrecision(ops.BF16); err != nil {
		t.Skipf("needs AVX512-BF16 or AMX: %v", err)
	}
	if !layoutAvailable() {
		t.Fatal("a CPU that runs bf16 has AVX-512, so dnnl_layout.c's transposes must be available")
	}
	threads := min(runtime.GOMAXPROCS(0), ompThreadLimit())
	for _, s := range []ops.ConvShape{
		{N: 2 * threads, Cin: 32, H: 32, W: 32, Cout: 64, K: 3, Stride: 1, Pad: 1},
		{N: 8 * threads, Cin: 64, H: 8, W: 8, Cout: 48, K: 3, Stride: 1, Pad: 1},
		{N: 2 * threads, Cin: 96, H: 8, W: 8, Cout: 32, K: 1, Stride: 1, Pad: 0},
		{N: 2*threads + 1, Cin: 64, H: 16, W: 16, Cout: 64, K: 3, Stride: 1, Pad: 1},
		{N: 3, Cin: 16, H: 10, W: 12, Cout: 32, K: 3, Stride: 1, Pad: 0},
	} {
		n := be.KeptLen(s)
		nx, nw, ny := s.N*s.Cin*s.H*s.W, s.Cout*s.Cin*s.K*s.K, s.N*s.Cout*s.OutH()*s.OutW()
		if n != nx/2 {
			t.Fatalf("%+v: KeptLen = %d, want %d (NHWC bf16)", s, n, nx/2)
		}
		r := rand.New(rand.NewPCG(uint64(s.Cin), uint64(s.N)))
		up := func(n int) ops.Buf { return normalBuf(be, r, n) }
		x, w, b, dy := up(nx), up(nw), up(s.Cout), up(ny)
		init := [3]ops.Buf{up(nx), up(nw), up(s.Cout)} // dx, dw, db start here
		var got [2][4][]float32                        // from the kept x, from x: y, dx, dw, db
		kept := be.Alloc(n)
		be.Fill(kept, float32(math.NaN()))
		be.KeepConvInput(s, x, kept)
		// The kept x first: oneDNN's workspace holds no transposed copy of this x yet, so a pass that read the
		// workspace instead of the kept x would differ.
		for i, xin := range []ops.Buf{be.Kept(s, kept), x} {
			y := be.Alloc(ny)
			be.Conv2D(s, xin, w, b, y)
			g := [3]ops.Buf{be.Alloc(nx), be.Alloc(nw), be.Alloc(s.Cout)}
			for j := range g {
				be.Copy(g[j], init[j])
			}
			be.Conv2DBackward(s, xin, w, dy, g[0], g[1], g[2])
			for j, o := range []ops.Buf{y, g[0], g[1], g[2]} {
				got[i][j] = make([]float32, o.Len())
				be.Download(got[i][j], o)
			}
		}
		for j, name := range []string{"y", "dx", "dw", "db"} {
			for k := range got[0][j] {
				if math.Float32bits(got[0][j][k]) != math.Float32bits(got[1][j][k]) {
					t.Fatalf("%+v (backward-weights %s): %s[%d] = %g from x, %g from the kept x", s, be.dn.planImpl(s, 2),
						name, k, got[1][j][k], got[0][j][k])
				}
			}
		}
	}
	// Not kept: fp32, a stride-2 or few-output-channel convolution (BF16WeightGrad), odd Cin·H·W.
	for _, s := range []ops.ConvShape{
		{N: 2, Cin: 64, H: 16, W: 16, Cout: 64, K: 3, Stride: 2, Pad: 1},
		{N: 2, Cin: 64, H: 16, W: 16, Cout: 3, K: 3, Stride: 1, Pad: 1},
		{N: 2, Cin: 3, H: 5, W: 5, Cout: 32, K: 3, Stride: 1, Pad: 1},
	} {
		if n := be.KeptLen(s); n != 0 {
			t.Errorf("%+v: KeptLen = %d at bf16, want 0", s, n)
		}
	}
	s := ops.ConvShape{N: 2, Cin: 32, H: 8, W: 8, Cout: 32, K: 3, Stride: 1, Pad: 1}
	kept := be.Alloc(be.KeptLen(s))
	be.KeepConvInput(s, be.Alloc(2*32*64), kept)
	kx := be.Kept(s, kept)
	for _, c := range []struct {
		name, want string
		f          func()
	}{
		{"another op reads a kept x", "not a buffer of cpu-float32", func() { be.SiLU(kx, be.Alloc(kx.Len())) }},
		{"a convolution of another shape", "was kept for shape", func() {
			s2 := s
			s2.Cout = 16
			be.Conv2D(s2, kx, be.Alloc(16*32*9), nil, be.Alloc(2*16*64))
		}},
		{"at fp32", "keeps no x", func() {
			if err := be.SetPrecision(ops.FP32); err != nil {
				t.Fatal(err)
			}
			defer be.SetPrecision(ops.BF16)
			be.Conv2D(s, kx, be.Alloc(32*32*9), nil, be.Alloc(2*32*64))
		}},
	} {
		func() {
			defer func() {
				if r, _ := recover().(string); !strings.Contains(r, c.want) {
					t.Errorf("%s: panic %q, want one that says %q", c.name, r, c.want)
				}
			}()
			c.f()
		}()
	}
	if n := New().KeptLen(s); n != 0 {
		t.Errorf("fp32: KeptLen = %d, want 0", n)
	}
	if n := New64().KeptLen(s); n != 0 {
		t.Errorf("float64 backend: KeptLen = %d, want 0", n)
	}
}

// TestKeptConvInputBlocked runs TestKeptConvInputBitExact again with oneDNN held to AVX512-BF16 without AMX
// (ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16): its bf16 kernels take channel-blocked layouts (aBcd16b), so the kept NHWC
// x goes through oneDNN's bf16 → bf16 reorder before each pass, the path of a CPU without AMX.
func TestKeptConvInputBlocked(t *testing.T) {
	if avx, _ := cpuBF16(); !avx {
		t.Skip("this CPU has no AVX512-BF16: oneDNN's blocked bf16 kernels cannot run")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestKeptConvInputBitExact$", "-test.v")
	cmd.Env = append(os.Environ(), "ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16", "ONEDNN_VERBOSE=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	// The child ran the blocked kernels and the reorders from the kept x.
	for _, want := range []string{"--- PASS: TestKeptConvInputBitExact", "jit_bf16:avx512_core_bf16",
		"src_bf16::blocked:acdb:f0 dst_bf16::blocked:aBcd16b"} {
		if !strings.Contains(string(out), want) {
			t.Fatalf("child output lacks %q:\n%.3000s", want, out)
		}
	}
}
