//go:build !cuda

package cuda

import (
	"math"
	"math/rand"
	"testing"

	"github.com/ddpmgo/ddpm/ops"
)

// Deferred zero fills (fills.go), on the emulator: an op that takes its output's fill gives what the fill followed
// by the accumulation gives, without launching the fill; every other access sees the zeros.

// memsetCounter notes the Memset32 calls that reach the driver (Alloc's included).
type memsetCounter struct {
	Driver
	n    int
	last []zeroFill // the ranges since the last reset
}

func (m *memsetCounter) Memset32(p DevicePtr, v uint32, n int) error {
	m.n++
	m.last = append(m.last, zeroFill{p: p, n: n})
	return m.Driver.Memset32(p, v, n)
}

// on counts the memsets noted since the last call of on that wrote into b.
func (m *memsetCounter) on(b ops.Buf) int {
	cb, k := b.(*Buf), 0
	for _, f := range m.last {
		if f.p < cb.p+DevicePtr(4*cb.n) && cb.p < f.p+DevicePtr(4*f.n) {
			k++
		}
	}
	return k
}

func (m *memsetCounter) reset() { m.last = nil }

// fillsBackend is testBackend's guarded emulator behind a memsetCounter.
func fillsBackend(t *testing.T) (*Backend, *memsetCounter) {
	t.Helper()
	var mc *memsetCounter
	be := guardedBackend(t, func(d Driver) Driver { mc = &memsetCounter{Driver: d}; return mc })
	return be, mc
}

func fillsUpload(be *Backend, v []float32) ops.Buf {
	b := be.Alloc(len(v))
	be.Upload(b, v)
	return b
}

func fillsRand(rnd *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rnd.NormFloat64())
	}
	return v
}

func fillsDownload(t *testing.T, be *Backend, b ops.Buf) []float32 {
	t.Helper()
	v := make([]float32, b.Len())
	be.Download(v, b)
	if err := be.Sync(); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestEmuDeferredZeroFillTaken: for each op that takes a fill, the output written over NaNs after Fill(out, 0) equals
// (==, which does not tell the zeros' signs apart) the output accumulated into uploaded zeros, and the fill never
// reaches the driver.
func TestEmuDeferredZeroFillTaken(t *testing.T) {
	rnd := rand.New(rand.NewSource(1))
	convs := map[string]ops.ConvShape{
		"conv 3x3":                 {N: 2, Cin: 5, H: 6, W: 6, Cout: 7, K: 3, Stride: 1, Pad: 1},
		"conv 3x3 stride 2 padEnd": {N: 2, Cin: 6, H: 8, W: 8, Cout: 5, K: 3, Stride: 2, Pad: 0, PadEnd: 1},
		"conv split-K":             {N: 2, Cin: 8, H: 8, W: 8, Cout: 64, K: 3, Stride: 1, Pad: 1},
	}
	type op struct {
		outs []int                                               // lengths of the outputs that may take a fill
		prep func(be *Backend) func(be *Backend, outs []ops.Buf) // uploads the inputs; returns the op
	}
	cases := map[string]op{}
	for name, s := range convs {
		x, w, dy := fillsRand(rnd, s.N*s.Cin*s.H*s.W), fillsRand(rnd, s.Cout*s.Cin*s.K*s.K),
			fillsRand(rnd, s.N*s.Cout*s.OutH()*s.OutW())
		if name == "conv split-K" {
			tiles := ceilDiv(s.N*s.H*s.W, igBN) * ceilDiv(s.Cin, igemmTile(s.Cin))
			if sp, _ := convSplits(tiles, s.K*s.K*roundUp(s.Cout, 4), igBKTC); sp < 2 { // at fp32, the test's precision
				t.Fatalf("%s: %d split(s); the case is meant to split backward-data", name, sp)
			}
		}
		cases[name] = op{outs: []int{len(x)}, prep: func(be *Backend) func(*Backend, []ops.Buf) {
			xb, wb, dyb := fillsUpload(be, x), fillsUpload(be, w), fillsUpload(be, dy)
			return func(be *Backend, o []ops.Buf) { be.Conv2DBackward(s, xb, wb, dyb, o[0], nil, nil) }
		}}
	}
	ns := ops.NormShape{N: 2, C: 8, HW: 9, G: 4, Eps: 1e-5}
	nx, gam, bet, ndy := fillsRand(rnd, 2*8*9), fillsRand(rnd, 8), fillsRand(rnd, 8), fillsRand(rnd, 2*8*9)
	stats := func(be *Backend, x ops.Buf) ops.Buf {
		st, y := be.Alloc(2*ns.N*ns.G), be.Alloc(len(nx))
		be.GroupNorm(ns, x, fillsUpload(be, gam), fillsUpload(be, bet), y, st)
		return st
	}
	cases["groupnorm+silu"] = op{outs: []int{len(nx)}, prep: func(be *Backend) func(*Backend, []ops.Buf) {
		x, g, b, dy, dg, db := fillsUpload(be, nx), fillsUpload(be, gam), fillsUpload(be, bet), fillsUpload(be, ndy),
			be.Alloc(8), be.Alloc(8)
		st := stats(be, x)
		return func(be *Backend, o []ops.Buf) { be.GroupNormSiLUBackward(ns, x, g, b, st, dy, o[0], dg, db) }
	}}
	cases["groupnorm"] = op{outs: []int{len(nx)}, prep: func(be *Backend) func(*Backend, []ops.Buf) {
		x, g, dy, dg, db := fillsUpload(be, nx), fillsUpload(be, gam), fillsUpload(be, ndy), be.Alloc(8), be.Alloc(8)
		st := stats(be, x)
		return func(be *Backend, o []ops.Buf) { be.GroupNormBackward(ns, x, g, st, dy, o[0], dg, db) }
	}}
	lx, lw, ldy := fillsRand(rnd, 5*12), fillsRand(rnd, 7*12), fillsRand(rnd, 5*7)
	cases["linear"] = op{outs: []int{len(lx)}, prep: func(be *Backend) func(*Backend, []ops.Buf) {
		x, w, dy, dw, db := fillsUpload(be, lx), fillsUpload(be, lw), fillsUpload(be, ldy), be.Alloc(len(lw)), be.Alloc(7)
		return func(be *Backend, o []ops.Buf) { be.LinearBackward(5, 12, 7, x, w, dy, o[0], dw, db) }
	}}
	ma, mb := fillsRand(rnd, 30), fillsRand(rnd, 30)
	cases["mse"] = op{outs: []int{30}, prep: func(be *Backend) func(*Backend, []ops.Buf) {
		a, b := fillsUpload(be, ma), fillsUpload(be, mb)
		return func(be *Backend, o []ops.Buf) { be.MSEBackward(0.5, a, b, o[0]) }
	}}
	as := ops.AttnShape{N: 2, L: 6, Heads: 2, D: 4}
	an := as.N * as.L * as.Heads * as.D
	aq, ak, av, ado := fillsRand(rnd, an), fillsRand(rnd, an), fillsRand(rnd, an), fillsRand(rnd, an)
	cases["attention"] = op{outs: []int{an, an, an}, prep: func(be *Backend) func(*Backend, []ops.Buf) {
		q, k, v, do := fillsUpload(be, aq), fillsUpload(be, ak), fillsUpload(be, av), fillsUpload(be, ado)
		out, p := be.Alloc(an), be.Alloc(as.N*as.Heads*as.L*as.L)
		be.Attention(as, q, k, v, out, p)
		return func(be *Backend, o []ops.Buf) { be.AttentionBackward(as, q, k, v, p, do, o[0], o[1], o[2]) }
	}}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			be, mc := fillsBackend(t)
			want := make([][]float32, len(c.outs))
			outs := make([]ops.Buf, len(c.outs))
			for i, n := range c.outs {
				outs[i] = fillsUpload(be, make([]float32, n))
			}
			c.prep(be)(be, outs)
			for i := range outs {
				want[i] = fillsDownload(t, be, outs[i])
			}
			nan := float32(math.NaN())
			for i, n := range c.outs {
				garbage := make([]float32, n)
				for j := range garbage {
					garbage[j] = nan
				}
				outs[i] = fillsUpload(be, garbage)
			}
			if err := be.Sync(); err != nil {
				t.Fatal(err)
			}
			run := c.prep(be)
			mc.reset()
			for _, o := range outs {
				be.Fill(o, 0)
			}
			run(be, outs)
			if err := be.Sync(); err != nil {
				t.Fatal(err)
			}
			for i, o := range outs {
				if k := mc.on(o); k != 0 {
					t.Errorf("output %d: %d memset(s) reached the driver; the op should have taken the fill", i, k)
				}
			}
			for i := range outs {
				got := fillsDownload(t, be, outs[i])
				for j := range got {
					if got[j] != want[i][j] {
						t.Fatalf("output %d [%d] = %v written over a deferred fill, %v accumulated into zeros", i, j,
							got[j], want[i][j])
					}
				}
			}
		})
	}
}

// TestEmuDeferredZeroFillObserved: whatever touches a buffer whose fill waits sees the zeros, in the order the
// fills and writes were asked for.
func TestEmuDeferredZeroFillObserved(t *testing.T) {
	be, mc := fillsBackend(t)
	ones := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = 1
		}
		return v
	}
	check := func(what string, b ops.Buf, want float32) {
		t.Helper()
		for i, v := range fillsDownload(t, be, b) {
			if v != want {
				t.Fatalf("%s: [%d] = %v, want %v", what, i, v, want)
			}
		}
	}

	a := fillsUpload(be, ones(64))
	be.Fill(a, 0)
	check("Download after Fill(0)", a, 0)

	// An op reading the buffer as an input.
	a, y := fillsUpload(be, ones(64)), fillsUpload(be, ones(64))
	be.Fill(a, 0)
	be.Axpy(1, a, y)
	check("Axpy(1, a, y) after Fill(a, 0): y", y, 1)

	// A later non-zero fill, and a zero fill after a non-zero one.
	be.Fill(a, 0)
	be.Fill(a, 2)
	check("Fill(0) then Fill(2)", a, 2)
	be.Fill(a, 2)
	be.Fill(a, 0)
	check("Fill(2) then Fill(0)", a, 0)

	// Overlapping fills: the second launches the first, in order.
	parent := fillsUpload(be, ones(64))
	be.Fill(parent, 0)
	view := be.Slice(parent, 16, 16)
	be.Fill(view, 0)
	be.Upload(view, ones(16))
	got := fillsDownload(t, be, parent)
	for i, v := range got {
		want := float32(0)
		if i >= 16 && i < 32 {
			want = 1
		}
		if v != want {
			t.Fatalf("Fill(parent, 0), Fill(view, 0), Upload(view, 1): [%d] = %v, want %v", i, v, want)
		}
	}

	// An op whose output is a view of a waiting fill does not take it (not the same range): the whole fill is
	// launched and the op accumulates into its zeros.
	parent = fillsUpload(be, ones(2*12))
	lx, lw, ldy := fillsUpload(be, ones(12)), fillsUpload(be, ones(7*12)), fillsUpload(be, ones(7))
	mc.reset()
	be.Fill(parent, 0)
	dx := be.Slice(parent, 0, 12)
	be.LinearBackward(1, 12, 7, lx, lw, ldy, dx, nil, nil)
	if k := mc.on(parent); k != 1 {
		t.Errorf("a view of a waiting fill as dx: %d memsets into the parent, want its 1", k)
	}
	check("LinearBackward into a view of a waiting fill: dx", dx, 7)
	check("LinearBackward into a view of a waiting fill: the rest", be.Slice(parent, 12, 12), 0)

	// Ptr hands the address to code outside the backend (cuda/nccl): the fill is launched first.
	b := fillsUpload(be, ones(32)).(*Buf)
	be.Fill(b, 0)
	host := make([]float32, 32)
	if err := Download(be.d, host, b.Ptr()); err != nil {
		t.Fatal(err)
	}
	for i, v := range host {
		if v != 0 {
			t.Fatalf("driver read after Ptr(): [%d] = %v, want 0", i, v)
		}
	}

	// Sync launches what waits.
	c := fillsUpload(be, ones(8)).(*Buf)
	be.Fill(c, 0)
	before := mc.n
	if err := be.Sync(); err != nil {
		t.Fatal(err)
	}
	if mc.n != before+1 || len(be.fills) != 0 {
		t.Errorf("Sync: %d memsets, %d fills still waiting; want 1 and 0", mc.n-before, len(be.fills))
	}
}
