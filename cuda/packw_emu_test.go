//go:build !cuda

package cuda

import (
	"fmt"
	"math"
	"math/rand"
	"testing"

	"github.com/ddpmgo/ddpm/ops"
)

// The convolution weights packed once (packw.go), on the guarded emulator: the same results as the per-call pack,
// bit for bit, without a conv2d_pack_w_* launch; a write to a packed weight through the backend (or a change of
// precision) drops the copies; a weight outside the table is packed per call.

// launchCounter counts the launches of each kernel that reach the driver.
type launchCounter struct {
	Driver
	n map[string]int
}

func (c *launchCounter) Launch(kernel string, grid, block Dim3, smem int, args ...Arg) error {
	c.n[kernel]++
	return c.Driver.Launch(kernel, grid, block, smem, args...)
}

// packW is the number of per-call weight packs since the last reset.
func (c *launchCounter) packW() int { return c.n["conv2d_pack_w_f32"] + c.n["conv2d_pack_w_bf16"] }

func (c *launchCounter) batch() int {
	return c.n["conv2d_pack_w_batch_f32"] + c.n["conv2d_pack_w_batch_bf16"]
}

func (c *launchCounter) reset() { clear(c.n) }

// packBackend is testBackend's guarded emulator (noted for TestEmuKernelCoverage) behind a launchCounter, at
// precision p.
func packBackend(t *testing.T, p ops.Precision) (*Backend, *launchCounter) {
	t.Helper()
	var lc *launchCounter
	be := guardedBackend(t, func(d Driver) Driver { lc = &launchCounter{Driver: d, n: map[string]int{}}; return lc })
	if err := be.SetPrecision(p); err != nil {
		t.Fatal(err)
	}
	launches.Lock()
	launches.ran["TestPackConvWeights"] = true
	launches.Unlock()
	return be, lc
}

// packShapes: 1x1 and 3x3, strides 1 and 2 (with PadEnd), channel counts off every packing multiple, one
// backward-data with split-K partials (many pixels, few rows).
var packShapes = []ops.ConvShape{
	{N: 2, Cin: 3, H: 7, W: 6, Cout: 5, K: 3, Stride: 1, Pad: 1},
	{N: 1, Cin: 6, H: 8, W: 8, Cout: 9, K: 3, Stride: 2, Pad: 0, PadEnd: 1},
	{N: 2, Cin: 5, H: 5, W: 5, Cout: 7, K: 1, Stride: 1},
	{N: 1, Cin: 11, H: 4, W: 4, Cout: 3, K: 3, Stride: 2, Pad: 1},
}

// convOperands are one shape's buffers, uploaded from a seeded source.
type convOperands struct {
	s                       ops.ConvShape
	x, w, b, dy, dx, dw, db ops.Buf
}

func newConvOperands(be *Backend, s ops.ConvShape, seed int64) *convOperands {
	rnd := rand.New(rand.NewSource(seed))
	up := func(n int) ops.Buf {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rnd.NormFloat64())
		}
		b := be.Alloc(n)
		be.Upload(b, v)
		return b
	}
	kk := s.K * s.K
	return &convOperands{s: s, x: up(s.N * s.Cin * s.H * s.W), w: up(s.Cout * s.Cin * kk), b: up(s.Cout),
		dy: up(s.N * s.Cout * s.OutH() * s.OutW()), dx: up(s.N * s.Cin * s.H * s.W), dw: up(s.Cout * s.Cin * kk),
		db: up(s.Cout)}
}

func (o *convOperands) weight() ops.ConvWeight {
	return ops.ConvWeight{W: o.w, Cout: o.s.Cout, Cin: o.s.Cin, K: o.s.K}
}

// run is Conv2D then Conv2DBackward (dx, dw, db) of o, returning y, dx, dw and db.
func (o *convOperands) run(be *Backend) [][]float32 {
	y := be.Alloc(o.s.N * o.s.Cout * o.s.OutH() * o.s.OutW())
	defer be.Free(y)
	be.Conv2D(o.s, o.x, o.w, o.b, y)
	be.Conv2DBackward(o.s, o.x, o.w, o.dy, o.dx, o.dw, o.db)
	var out [][]float32
	for _, b := range []ops.Buf{y, o.dx, o.dw, o.db} {
		v := make([]float32, b.Len())
		be.Download(v, b)
		out = append(out, v)
	}
	return out
}

func sameBits(t *testing.T, what string, got, want [][]float32) {
	t.Helper()
	names := []string{"y", "dx", "dw", "db"}
	for i := range want {
		for j := range want[i] {
			if math.Float32bits(got[i][j]) != math.Float32bits(want[i][j]) {
				t.Fatalf("%s: %s[%d] = %g, the per-call pack gives %g", what, names[i], j, got[i][j], want[i][j])
			}
		}
	}
}

func TestPackConvWeights(t *testing.T) {
	for _, p := range ops.Precisions {
		t.Run(string(p), func(t *testing.T) {
			ref, _ := packBackend(t, p)
			be, lc := packBackend(t, p)
			var ros, os []*convOperands
			var ws []ops.ConvWeight
			for i, s := range packShapes {
				ros = append(ros, newConvOperands(ref, s, int64(i)))
				os = append(os, newConvOperands(be, s, int64(i)))
				ws = append(ws, os[i].weight())
			}
			be.PackConvWeights(ws)
			be.PackConvWeights(ws) // the table unchanged: not uploaded again (same results)
			if lc.batch() != 2 {
				t.Fatalf("%d batch packs, want 2", lc.batch())
			}
			lc.reset()
			for i := range os {
				want := ros[i].run(ref)
				sameBits(t, fmt.Sprintf("%+v", packShapes[i]), os[i].run(be), want)
			}
			if lc.packW() != 0 {
				t.Errorf("%d per-call weight packs after PackConvWeights, want 0", lc.packW())
			}
			if err := be.Sync(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestPackConvWeightsInvalidation: after each write to a packed weight through the backend, the next convolution
// packs it again and matches a backend that never packed; a write elsewhere keeps the copies.
func TestPackConvWeightsInvalidation(t *testing.T) {
	s := packShapes[1]
	writes := []struct {
		name string
		f    func(be *Backend, o, other *convOperands)
	}{
		{"Upload", func(be *Backend, o, _ *convOperands) {
			v := make([]float32, o.w.Len())
			be.Download(v, o.w)
			v[3] += 1
			be.Upload(o.w, v)
		}},
		{"UploadView", func(be *Backend, o, _ *convOperands) {
			be.Upload(be.Slice(o.w, 5, 2), []float32{0.25, -4})
		}},
		{"Fill", func(be *Backend, o, _ *convOperands) { be.Fill(o.w, 0.5) }},
		{"FillZero", func(be *Backend, o, _ *convOperands) { be.Fill(o.w, 0) }},
		{"Copy", func(be *Backend, o, other *convOperands) { be.Copy(o.w, other.dw) }},
		{"AdamWStep", func(be *Backend, o, other *convOperands) {
			m, v := be.Alloc(o.w.Len()), be.Alloc(o.w.Len())
			be.AdamWStep(ops.AdamW{LR: 0.1, Beta1: 0.9, Beta2: 0.99, Eps: 1e-8, RC1: 1, RC2: 1, GradScale: 1}, o.w,
				other.dw, m, v)
		}},
		{"EMA", func(be *Backend, o, other *convOperands) { be.EMA(0.5, o.w, other.dw) }},
		{"Ptr", func(be *Backend, o, _ *convOperands) {
			p := o.w.(*Buf).Ptr() // external code writes it
			if err := Upload(be.d, p+8, []float32{7}); err != nil {
				panic(err)
			}
		}},
	}
	for _, prec := range []ops.Precision{ops.FP32, ops.BF16} {
		for _, wr := range writes {
			t.Run(string(prec)+"/"+wr.name, func(t *testing.T) {
				be, lc := packBackend(t, prec)
				o, other := newConvOperands(be, s, 1), newConvOperands(be, s, 2)
				be.PackConvWeights([]ops.ConvWeight{o.weight()})
				wr.f(be, o, other)
				lc.reset()
				got := o.run(be)
				if lc.packW() != 2 {
					t.Errorf("%d per-call weight packs after %s, want 2", lc.packW(), wr.name)
				}
				// The reference: a backend that never packed, with o's operands as they are now.
				ref, _ := packBackend(t, prec)
				ro := newConvOperands(ref, s, 1)
				for _, pair := range [][2]ops.Buf{{o.x, ro.x}, {o.w, ro.w}, {o.b, ro.b}, {o.dy, ro.dy}} {
					v := make([]float32, pair[0].Len())
					be.Download(v, pair[0])
					ref.Upload(pair[1], v)
				}
				// dx, dw, db accumulate: start the reference from o's values before the run.
				o2 := newConvOperands(be, s, 1)
				for _, pair := range [][2]ops.Buf{{o2.dx, ro.dx}, {o2.dw, ro.dw}, {o2.db, ro.db}} {
					v := make([]float32, pair[0].Len())
					be.Download(v, pair[0])
					ref.Upload(pair[1], v)
				}
				sameBits(t, wr.name, got, ro.run(ref))
				if err := be.Sync(); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
	t.Run("SetPrecision", func(t *testing.T) {
		be, lc := packBackend(t, ops.FP32)
		o := newConvOperands(be, s, 1)
		be.PackConvWeights([]ops.ConvWeight{o.weight()})
		if err := be.SetPrecision(ops.BF16); err != nil {
			t.Fatal(err)
		}
		lc.reset()
		got := o.run(be)
		if lc.n["conv2d_pack_w_bf16"] != 2 {
			t.Errorf("%d bf16 weight packs after SetPrecision, want 2", lc.n["conv2d_pack_w_bf16"])
		}
		ref, _ := packBackend(t, ops.BF16)
		sameBits(t, "SetPrecision", got, newConvOperands(ref, s, 1).run(ref))
		// Back to fp32: the fp32 copies were dropped too.
		if err := be.SetPrecision(ops.FP32); err != nil {
			t.Fatal(err)
		}
		lc.reset()
		o.run(be)
		if lc.packW() != 2 {
			t.Errorf("%d weight packs after SetPrecision back to fp32, want 2", lc.packW())
		}
	})
	t.Run("WriteElsewhere", func(t *testing.T) {
		be, lc := packBackend(t, ops.TF32)
		o, other := newConvOperands(be, s, 1), newConvOperands(be, s, 2)
		be.PackConvWeights([]ops.ConvWeight{o.weight()})
		be.Upload(other.w, make([]float32, other.w.Len()))
		be.Fill(other.dw, 0)
		be.Copy(other.dx, o.dx)
		be.EMA(0.5, other.w, o.w)
		_ = o.dw.(*Buf).Ptr()
		lc.reset()
		o.run(be)
		if lc.packW() != 0 {
			t.Errorf("%d per-call weight packs after writes to other buffers, want 0", lc.packW())
		}
	})
}

// TestPackConvWeightsOutsideTable: a weight that is not in the table (another buffer of the same shape, a view of
// a packed weight with another length, a packed weight under another shape) is packed per call, with the same
// results as without a table.
func TestPackConvWeightsOutsideTable(t *testing.T) {
	for _, prec := range []ops.Precision{ops.FP32, ops.TF32, ops.BF16} {
		t.Run(string(prec), func(t *testing.T) {
			be, lc := packBackend(t, prec)
			ref, _ := packBackend(t, prec)
			s := packShapes[0]
			packed, o := newConvOperands(be, s, 1), newConvOperands(be, s, 2)
			be.PackConvWeights([]ops.ConvWeight{packed.weight()})
			lc.reset()
			sameBits(t, "other buffer", o.run(be), newConvOperands(ref, s, 2).run(ref))
			if lc.packW() != 2 {
				t.Errorf("%d per-call weight packs for a weight outside the table, want 2", lc.packW())
			}
			// The packed weight's first Cout−1 rows: the same address, fewer elements.
			s2 := s
			s2.Cout--
			o2 := newConvOperands(be, s2, 3)
			o2.w = be.Slice(packed.w, 0, s2.Cout*s2.Cin*s2.K*s2.K)
			lc.reset()
			got := o2.run(be)
			if lc.packW() != 2 {
				t.Errorf("%d per-call weight packs for a view of a packed weight, want 2", lc.packW())
			}
			r2 := newConvOperands(ref, s2, 3)
			v := make([]float32, o2.w.Len())
			be.Download(v, o2.w)
			ref.Upload(r2.w, v)
			sameBits(t, "view", got, r2.run(ref))
			if err := be.Sync(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
