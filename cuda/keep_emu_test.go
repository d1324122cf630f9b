//go:build !cuda

package cuda

import (
	"fmt"
	"math/rand"
	"strings"
	"testing"

	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/model"
	"github.com/ddpmgo/ddpm/ops"
)

// keptGuard is the number of sentinel elements on each side of the kept storage: odd, so that the storage starts
// off a 16-byte boundary (as a slice of a workspace may) and the kernels' chunks rely on keptBase's alignment; more
// than the packing's slack (convSlack bfloat16), so that a write past the storage lands in the band.
const keptGuard = 211

const keptSentinel = float32(-1.2345e30)

// TestEmuKeptConvInputBitExact: at bf16, Conv2D, Conv2DAdd, Conv2DBackward and Conv2DBackwardSum from an x kept by
// KeepConvInput give y, dx, dw, db and the channel sums of the same calls on x itself, bit for bit, accumulating into
// buffers that hold values (and into a dx that is a waiting zero fill), on a 3x3 pad-1 shape, a strided one with
// PadEnd and a 1x1 one. The kept calls run first, on a backend whose scratch has held nothing yet, and after x is
// overwritten: they can read only the kept storage. The storage lies between sentinel guard bands that stay
// untouched; KeepConvInput is one launch and the kept forward packs no x. Where cinP ≠ wgradCp(cinP) (32 channels
// at 3x3) and at fp32 and tf32 KeptLen is 0. A kept x taken by another op, at another shape or after the precision
// changed panics, naming the op.
func TestEmuKeptConvInputBitExact(t *testing.T) {
	kept := []struct {
		name string
		s    ops.ConvShape
	}{
		{"3x3", ops.ConvShape{N: 2, Cin: 64, H: 8, W: 7, Cout: 16, K: 3, Stride: 1, Pad: 1}},
		{"3x3 stride 2", ops.ConvShape{N: 2, Cin: 64, H: 6, W: 6, Cout: 8, K: 3, Stride: 2, Pad: 0, PadEnd: 1}},
		{"1x1", ops.ConvShape{N: 3, Cin: 128, H: 3, W: 4, Cout: 24, K: 1, Stride: 1}},
	}
	for _, c := range kept {
		t.Run(c.name, func(t *testing.T) { keptBitExact(t, c.s) })
	}
	t.Run("KeptLen 0", func(t *testing.T) {
		lc := &launchCounter{n: map[string]int{}}
		be := guardedBackend(t, func(d Driver) Driver { lc.Driver = d; return lc })
		for _, p := range []ops.Precision{ops.FP32, ops.TF32, ops.BF16} {
			if err := be.SetPrecision(p); err != nil {
				t.Fatal(err)
			}
			for _, c := range kept {
				if n := be.KeptLen(c.s); (n != 0) != (p == ops.BF16) {
					t.Errorf("%s: KeptLen(%+v) = %d", p, c.s, n)
				}
			}
			// 32 channels: forward packs 32, backward-weight 64 (wgradCp): not the same layout.
			s := ops.ConvShape{N: 2, Cin: 32, H: 4, W: 4, Cout: 8, K: 3, Stride: 1, Pad: 1}
			if n := be.KeptLen(s); n != 0 {
				t.Errorf("%s: KeptLen(%+v) = %d, want 0", p, s, n)
			}
			wantPanic(t, "cuda KeepConvInput", func() { be.KeepConvInput(s, be.Alloc(2*32*16), be.Alloc(1024)) })
			wantPanic(t, "cuda Kept", func() { be.Kept(s, be.Alloc(1024)) })
		}
	})
}

func keptBitExact(t *testing.T, s ops.ConvShape) {
	lc := &launchCounter{n: map[string]int{}}
	be := guardedBackend(t, func(d Driver) Driver { lc.Driver = d; return lc })
	if err := be.SetPrecision(ops.BF16); err != nil {
		t.Fatal(err)
	}
	g := geomOf(s, ops.BF16)
	n := be.KeptLen(s)
	if want := s.N * (g.hp*g.wp*g.cinP/2 + keptExtra); n != want || n%s.N != 0 {
		t.Fatalf("KeptLen(%+v) = %d, want N·(hp·wp·cinP/2 + %d) = %d", s, n, keptExtra, want)
	}
	s1 := s
	s1.N = 1
	if n1 := be.KeptLen(s1); n != s.N*n1 {
		t.Fatalf("KeptLen %d at N = %d, %d at N = 1: not linear in N", n, s.N, n1)
	}

	rnd := rand.New(rand.NewSource(7))
	ohw := s.OutH() * s.OutW()
	xn, wn, yn := s.N*s.Cin*s.H*s.W, s.Cout*s.Cin*s.K*s.K, s.N*s.Cout*ohw
	ld := s.Cout + 3
	chN := ops.RowsLen(s.N, s.Cout, ld)
	xv := fillsRand(rnd, xn)
	x, w, b := fillsUpload(be, xv), fillsUpload(be, fillsRand(rnd, wn)), fillsUpload(be, fillsRand(rnd, s.Cout))
	ch, res, dy := fillsUpload(be, fillsRand(rnd, chN)), fillsUpload(be, fillsRand(rnd, yn)), fillsUpload(be, fillsRand(rnd, yn))
	a := ops.ConvAddends{Chan: ch, ChanLd: ld, Res: res}
	// The accumulated outputs' initial values, the same for both runs.
	y0, dx0, dw0, db0, dch0 := fillsRand(rnd, yn), fillsRand(rnd, xn), fillsRand(rnd, wn), fillsRand(rnd, s.Cout), fillsRand(rnd, chN)

	full := be.Alloc(n + 2*keptGuard)
	init := make([]float32, n+2*keptGuard)
	for i := range init {
		init[i] = keptSentinel
	}
	be.Upload(full, init)
	kst := be.Slice(full, keptGuard, n)
	if l := lc.during(func() { be.KeepConvInput(s, x, kst) }); l != 1 || lc.n["conv2d_pack_act_bf16"] != 1 {
		t.Fatalf("KeepConvInput: %d launches (%v), want one conv2d_pack_act_bf16", l, lc.n)
	}
	kx := be.Kept(s, kst)
	be.Upload(x, fillsRand(rnd, xn)) // the kept calls must not read x

	// run makes the calls on xin into fresh outputs and returns them: y (Conv2D), y (Conv2DAdd), dx, dw, db
	// (Conv2DBackward), dx, dw, db, dchan (Conv2DBackwardSum), dw (dw only), dx (into a waiting zero fill) and dw.
	run := func(xin ops.Buf) (got [][]float32, fwdPacks int) {
		var outs []ops.Buf
		out := func(v []float32) ops.Buf {
			o := fillsUpload(be, v)
			outs = append(outs, o)
			return o
		}
		p0 := lc.n["conv2d_pack_act_bf16"]
		be.Conv2D(s, xin, w, b, out(y0))
		fwdPacks = lc.n["conv2d_pack_act_bf16"] - p0
		ops.Conv2DAdd(be, s, xin, w, b, out(y0), a)
		be.Conv2DBackward(s, xin, w, dy, out(dx0), out(dw0), out(db0))
		ops.Conv2DBackwardSum(be, s, xin, w, dy, out(dx0), out(dw0), out(db0), out(dch0), ld)
		be.Conv2DBackward(s, xin, w, dy, nil, out(dw0), nil)
		dxz := out(dx0)
		be.Fill(dxz, 0)
		be.Conv2DBackward(s, xin, w, dy, dxz, out(dw0), nil)
		got = make([][]float32, len(outs))
		for i, o := range outs {
			got[i] = fillsDownload(t, be, o)
		}
		return got, fwdPacks
	}
	// The kept calls first: the scratch holds no packed x of an earlier call.
	got, kp := run(kx)
	be.Upload(x, xv)
	want, pp := run(x)
	if kp != 0 || pp != 1 {
		t.Errorf("Conv2D packs x %d times from a kept x, %d times from x; want 0 and 1", kp, pp)
	}
	names := []string{"Conv2D y", "Conv2DAdd y", "Conv2DBackward dx", "Conv2DBackward dw", "Conv2DBackward db",
		"Conv2DBackwardSum dx", "Conv2DBackwardSum dw", "Conv2DBackwardSum db", "Conv2DBackwardSum dchan",
		"Conv2DBackward (dw only) dw", "Conv2DBackward (zero-filled dx) dx", "Conv2DBackward (zero-filled dx) dw"}
	for i := range want {
		sameFloatBits(t, names[i], got[i], want[i])
	}
	ticketsClear(t, be)
	gb := fillsDownload(t, be, full)
	for i, v := range gb {
		if (i < keptGuard || i >= keptGuard+n) && v != keptSentinel {
			t.Fatalf("guard band of the kept storage written at %d (storage [%d, %d)): %g", i, keptGuard, keptGuard+n, v)
		}
	}

	// Misuse: another op, another shape, another precision.
	wantPanic(t, "cuda Copy", func() { be.Copy(be.Alloc(n), kx) })
	wantPanic(t, "cuda SiLU", func() { be.SiLU(kx, be.Alloc(n)) })
	s2 := s
	s2.N = 1
	wantPanic(t, "x was kept for shape", func() { be.Conv2D(s2, kx, w, b, be.Alloc(s.Cout*ohw)) })
	wantPanic(t, "cuda Kept", func() { be.Kept(s, be.Slice(full, 0, n-1)) })
	if err := be.SetPrecision(ops.TF32); err != nil {
		t.Fatal(err)
	}
	wantPanic(t, "x was kept at precision bf16", func() { be.Conv2D(s, kx, w, b, be.Alloc(yn)) })
	wantPanic(t, "x was kept at precision bf16", func() { be.Conv2DBackward(s, kx, w, dy, nil, be.Alloc(wn), nil) })
	if err := be.Sync(); err != nil {
		t.Fatal(err)
	}
}

// wantPanic fails unless f panics with a message that contains want.
func wantPanic(t *testing.T, want string, f func()) {
	t.Helper()
	defer func() {
		t.Helper()
		r := recover()
		if r == nil {
			t.Errorf("no panic, want one with %q", want)
			return
		}
		if msg := fmt.Sprint(r); !strings.Contains(msg, want) {
			t.Errorf("panic %q, want one with %q", msg, want)
		}
	}()
	f()
}

// noKeeper is the backend with KeptLen 0 for every shape: the U-Net then saves every convolution input as float32,
// and every other capability (the fused convolutions, the packed weights) stays as it is.
type noKeeper struct{ *Backend }

func (noKeeper) KeptLen(ops.ConvShape) int { return 0 }

// TestEmuKeptUNetStepBitExact: two training steps (Forward with dropout, Backward, AdamW) of a U-Net with 64
// channels -- resnets' 3x3 convolutions, a stride-2 downsampler, an upsampler, 1x1 attention projections are not
// convolutions; conv_out's 64 input channels -- at bf16 give the same output, gradients and weights, bit for bit,
// with the convolution inputs kept (KeepConvInput) as saved as float32, in a smaller workspace.
func TestEmuKeptUNetStepBitExact(t *testing.T) {
	cfg := config.Model{BlockChannels: []int{64, 64}, LayersPerBlock: 1, MidAttention: true,
		AttentionResolutions: []int{4}, AttentionHeadDim: 32, NormGroups: 8, NormEps: 1e-5, FlipSinToCos: true,
		DownsamplePadding: 1, Dropout: 0.2}
	const in, size, batch = 3, 8, 2
	run := func(keep bool) ([][]float32, int) {
		be := guardedBackend(t, nil) // not packBackend: that marks TestPackConvWeights as run (TestEmuKernelCoverage)
		if err := be.SetPrecision(ops.BF16); err != nil {
			t.Fatal(err)
		}
		var b ops.Backend = be
		if !keep {
			b = noKeeper{be}
		}
		u, err := model.New(b, cfg, in, size, batch)
		if err != nil {
			t.Fatal(err)
		}
		u.Init(3)
		rnd := rand.New(rand.NewSource(5))
		x := fillsUpload(be, fillsRand(rnd, batch*in*size*size))
		tt := fillsUpload(be, []float32{17, 901})
		dout := fillsUpload(be, fillsRand(rnd, batch*in*size*size))
		m, v := be.Alloc(u.NumParams()), be.Alloc(u.NumParams())
		var out [][]float32
		for step := range 2 {
			u.SetTrain(true, 11, uint64(step))
			u.ZeroGrads()
			out = append(out, fillsDownload(t, be, u.Forward(x, tt, batch)))
			u.Backward(dout)
			out = append(out, fillsDownload(t, be, u.Grads()))
			be.AdamWStep(ops.AdamW{LR: 1e-2, Beta1: 0.9, Beta2: 0.99, Eps: 1e-8, RC1: 1, RC2: 1, GradScale: 1},
				u.Params(), u.Grads(), m, v)
			out = append(out, fillsDownload(t, be, u.Params()))
		}
		if err := be.Sync(); err != nil {
			t.Fatalf("keep %v: %v", keep, err)
		}
		return out, u.WorkspaceElems()
	}
	want, wsPlain := run(false)
	got, wsKept := run(true)
	if wsKept >= wsPlain {
		t.Errorf("workspace %d elements with kept inputs, %d saving every x as float32", wsKept, wsPlain)
	}
	names := []string{"output", "grads", "params"}
	for i := range want {
		sameFloatBits(t, fmt.Sprintf("step %d %s", i/3+1, names[i%3]), got[i], want[i])
	}
}
