//go:build cgo

package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/ddpmgo/ddpm/ops"
)

// TestDeferredFillReads: a waiting zero fill (fills.go) is seen by every way of reading the buffer -- Download, a
// view's Download, Data, an op's operand -- and combines with later fills of overlapping parts in the order asked.
func TestDeferredFillReads(t *testing.T) {
	be := New()
	const n = 4 * deferMin
	ones := make([]float32, n)
	for i := range ones {
		ones[i] = 1
	}
	b := be.Alloc(n)
	be.Upload(b, ones)
	be.Fill(b, 0)
	if len(be.zeros.spans) != 1 {
		t.Fatalf("Fill(b, 0) of %d elements: %d waiting fills, want 1", n, len(be.zeros.spans))
	}
	v := be.Slice(b, deferMin, deferMin) // a view; making it reads nothing
	if len(be.zeros.spans) != 1 {
		t.Fatalf("Slice cleared the waiting fill")
	}
	got := make([]float32, deferMin)
	be.Download(got, v)
	for i, x := range got {
		if x != 0 {
			t.Fatalf("view after Fill(b, 0): element %d is %g", i, x)
		}
	}
	if len(be.zeros.spans) != 2 {
		t.Fatalf("reading a view: %d waiting fills, want 2 (the parts of b before and after it)", len(be.zeros.spans))
	}
	be.Fill(be.Slice(b, 3*deferMin, 10), 2) // a small fill of a part of a waiting one
	be.Fill(be.Slice(b, 0, 10), 3)
	d := Data[float32](b)
	if len(be.zeros.spans) != 0 {
		t.Fatalf("Data left %d waiting fills", len(be.zeros.spans))
	}
	for i, x := range d {
		want := float32(0)
		switch {
		case i < 10:
			want = 3
		case i >= 3*deferMin && i < 3*deferMin+10:
			want = 2
		}
		if x != want {
			t.Fatalf("element %d is %g, want %g", i, x, want)
		}
	}
	// An op's operand: Axpy reads y and adds.
	be.Upload(b, ones)
	be.Fill(b, 0)
	x := be.Alloc(n)
	be.Upload(x, ones)
	be.Axpy(2, x, b)
	be.Download(ones, b)
	for i, v := range ones {
		if v != 2 {
			t.Fatalf("Axpy into a waiting fill: element %d is %g, want 2", i, v)
		}
	}
}

// TestDeferredFillConvWrites: Conv2DBackward takes a waiting fill of dx (a view inside a larger waiting fill, as the
// U-Net's gradients between modules are) and writes dx instead of adding to zeros: dx equals the same pass into
// zeros written by Upload, the rest of the large buffer reads zero, and what dx does not cover still waits.
func TestDeferredFillConvWrites(t *testing.T) {
	be := New()
	if err := be.SetPrecision(ops.BF16); err != nil || !layoutAvailable() {
		t.Skipf("needs AVX512-BF16 or AMX and dnnl_layout.c's instructions (avx512_bf16): %v", err)
	}
	s := ops.ConvShape{N: 2, Cin: 32, H: 16, W: 16, Cout: 32, K: 3, Stride: 1, Pad: 1}
	if !dnnlWritesDx(be.dn, s) {
		t.Fatalf("%+v at bf16: backward-data's dx does not come back through dnnl_layout.c", s)
	}
	r := rand.New(rand.NewPCG(7, 8))
	up := func(n int) ops.Buf { return normalBuf(be, r, n) }
	nx := s.N * s.Cin * s.H * s.W
	x, w, dy := up(nx), up(s.Cout*s.Cin*9), up(s.N*s.Cout*s.H*s.W)
	want := be.Alloc(nx) // zeros, not a waiting fill
	be.Conv2DBackward(s, x, w, dy, want, nil, nil)

	big := up(3 * nx) // dx is its middle third
	be.Fill(big, 0)
	be.Conv2DBackward(s, x, w, dy, be.Slice(big, nx, nx), nil, nil)
	if len(be.zeros.spans) != 2 {
		t.Fatalf("after Conv2DBackward into a waiting fill: %d waiting fills, want 2 (dx taken out of the middle)", len(be.zeros.spans))
	}
	got := make([]float32, 3*nx)
	be.Download(got, big)
	ref := make([]float32, nx)
	be.Download(ref, want)
	for i, v := range got {
		exp := float32(0)
		if i >= nx && i < 2*nx {
			exp = ref[i-nx]
		}
		if v != exp {
			t.Fatalf("element %d of the buffer is %g, want %g", i, v, exp)
		}
	}
}

// TestDeferredFillTakers: ConcatBackward's da and db, Upsample2xBackward's dx, AttentionBackward's dq, dk, dv,
// GroupNorm(SiLU)Backward's dx with and without a residual (through Axpy), and LinearBackward's dx (fp32 and bf16 where the CPU has it)
// take a waiting fill over stale values (NaN among them) and write what they would have added to zeros.
func TestDeferredFillTakers(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for _, prec := range []ops.Precision{ops.FP32, ops.BF16} {
		be := New()
		if err := be.SetPrecision(prec); err != nil {
			t.Logf("%s: %v (skipped)", prec, err)
			continue
		}
		up := func(n int) ops.Buf { return normalBuf(be, r, n) }
		// stale is a buffer of n elements holding a NaN, filled with zeros that wait.
		stale := func(n int) ops.Buf {
			b := up(n)
			be.Upload(be.Slice(b, 0, 1), []float32{float32(math.NaN())})
			be.Fill(b, 0)
			return b
		}
		same := func(what string, got, want ops.Buf) {
			g, w := make([]float32, got.Len()), make([]float32, want.Len())
			be.Download(g, got)
			be.Download(w, want)
			for i := range g {
				if g[i] != w[i] {
					t.Fatalf("%s %s: element %d is %g into a waiting fill, %g into zeros", prec, what, i, g[i], w[i])
				}
			}
		}
		const n, ca, cb, hw = 3, 16, 24, 512 // da and db above deferMin
		dy := up(n * (ca + cb) * hw)
		da, db := stale(n*ca*hw), stale(n*cb*hw)
		wa, wb := be.Alloc(n*ca*hw), be.Alloc(n*cb*hw)
		be.ConcatBackward(n, ca, cb, hw, dy, da, db)
		be.ConcatBackward(n, ca, cb, hw, dy, wa, wb)
		same("ConcatBackward da", da, wa)
		same("ConcatBackward db", db, wb)

		const nc, h, w2 = 32, 32, 16 // dx above deferMin
		udy := up(nc * 4 * h * w2)
		udx, uwant := stale(nc*h*w2), be.Alloc(nc*h*w2)
		be.Upsample2xBackward(nc, h, w2, udy, udx)
		be.Upsample2xBackward(nc, h, w2, udy, uwant)
		same("Upsample2xBackward dx", udx, uwant)

		as := ops.AttnShape{N: 4, Heads: 4, L: 64, D: 16} // each gradient above deferMin
		an := as.N * as.L * as.Heads * as.D
		aq, ak, av, ado := up(an), up(an), up(an), up(an)
		ap := be.Alloc(as.N * as.Heads * as.L * as.L)
		ao := be.Alloc(an)
		be.Attention(as, aq, ak, av, ao, ap)
		dq, dk, dv := stale(an), stale(an), stale(an)
		wq, wk, wv := be.Alloc(an), be.Alloc(an), be.Alloc(an)
		be.AttentionBackward(as, aq, ak, av, ap, ado, dq, dk, dv)
		be.AttentionBackward(as, aq, ak, av, ap, ado, wq, wk, wv)
		same("AttentionBackward dq", dq, wq)
		same("AttentionBackward dk", dk, wk)
		same("AttentionBackward dv", dv, wv)

		ns := ops.NormShape{N: 4, C: 32, HW: 256, G: 8, Eps: 1e-5} // dx above deferMin
		nn := ns.N * ns.C * ns.HW
		gx, gamma, beta, gdy, res := up(nn), up(ns.C), up(ns.C), up(nn), up(nn)
		stats, gy := be.Alloc(2*ns.N*ns.G), be.Alloc(nn)
		be.GroupNorm(ns, gx, gamma, beta, gy, stats)
		for _, silu := range []bool{false, true} {
			for _, r := range []ops.Buf{nil, res} {
				gdx, gwant := stale(nn), be.Alloc(nn)
				for _, d := range []ops.Buf{gdx, gwant} {
					if silu {
						ops.GroupNormSiLUBackwardRes(be, ns, gx, gamma, beta, stats, gdy, d, nil, nil, r)
					} else {
						ops.GroupNormBackwardRes(be, ns, gx, gamma, stats, gdy, d, nil, nil, r)
					}
				}
				same(fmt.Sprintf("GroupNorm backward (SiLU %v, residual %v) dx", silu, r != nil), gdx, gwant)
			}
		}

		const rows, in, out = 256, 96, 64 // dx above deferMin
		x, w, g := up(rows*in), up(out*in), up(rows*out)
		dx, want := stale(rows*in), be.Alloc(rows*in)
		dw1, dw2 := be.Alloc(out*in), be.Alloc(out*in)
		be.LinearBackward(rows, in, out, x, w, g, dx, dw1, nil)
		be.LinearBackward(rows, in, out, x, w, g, want, dw2, nil)
		same("LinearBackward dx", dx, want)
		same("LinearBackward dw", dw1, dw2)
		if len(be.zeros.spans) != 0 {
			t.Fatalf("%s: %d fills still wait: an op did not take its output's", prec, len(be.zeros.spans))
		}
	}
}
