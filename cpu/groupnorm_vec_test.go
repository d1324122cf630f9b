package cpu

import (
	"math"
	"math/rand"
	"testing"

	"github.com/ddpmgo/ddpm/cpu/internal/vec"
	"github.com/ddpmgo/ddpm/ops"
)

// gnShapes: the opstest norm shapes (1×1 and 9×9 spatial, 3 and 5 channels per group,
// one element per group), tails of every kind for the 16- and 32-element blocks, and
// the celeba32 U-Net's (at batch 2).
var gnShapes = []ops.NormShape{
	{N: 3, C: 6, HW: 35, G: 2, Eps: 1e-5},
	{N: 1, C: 12, HW: 1, G: 4, Eps: 1e-6},
	{N: 2, C: 8, HW: 81, G: 8, Eps: 1e-5},
	{N: 3, C: 10, HW: 35, G: 2, Eps: 1e-5},
	{N: 2, C: 3, HW: 1, G: 3, Eps: 1e-3},
	{N: 2, C: 64, HW: 64, G: 32, Eps: 1e-5},
	{N: 2, C: 128, HW: 1024, G: 32, Eps: 1e-5},
	{N: 2, C: 256, HW: 16, G: 32, Eps: 1e-5},
	{N: 1, C: 96, HW: 49, G: 32, Eps: 1e-5},
}

// gnOutputs runs the group norm family on the float32 backend, with group norm's AVX-512
// kernels or without (avx), SiLU's or without (siluAVX), and returns every result by name: GroupNorm and GroupNormSiLU with
// their backward passes (into non-zero dx, dgamma, dbeta), and the unfused
// compositions that the fused ops must equal bit for bit.
func gnOutputs(t *testing.T, s ops.NormShape, avx, siluAVX bool) map[string][]float32 {
	t.Helper()
	defer func(v, w bool) { useAVX512GroupNorm, useAVX512 = v, w }(useAVX512GroupNorm, useAVX512)
	useAVX512GroupNorm, useAVX512 = avx, siluAVX
	r := rand.New(rand.NewSource(int64(s.N*1000 + s.C*10 + s.HW)))
	be := New()
	n := s.N * s.C * s.HW
	randn := func(n int, shift, scale float64) ops.Buf {
		d := make([]float32, n)
		for i := range d {
			d[i] = float32(shift + scale*r.NormFloat64())
		}
		b := be.Alloc(n)
		be.Upload(b, d)
		return b
	}
	clone := func(b ops.Buf) ops.Buf {
		c := be.Alloc(b.Len())
		be.Upload(c, Data[float32](b))
		return c
	}
	x, dy := randn(n, 2, 0.5), randn(n, 0, 1)
	gamma, beta := randn(s.C, 0, 1.5), randn(s.C, -0.5, 1)
	dx0, dg0, db0 := randn(n, 0, 1), randn(s.C, 0, 1), randn(s.C, 0, 1)
	out := map[string][]float32{}
	keep := func(name string, b ops.Buf) { out[name] = Data[float32](b) }

	y, st := be.Alloc(n), be.Alloc(2*s.N*s.G)
	be.GroupNorm(s, x, gamma, beta, y, st)
	keep("y", y)
	keep("stats", st)
	dx, dg, db := clone(dx0), clone(dg0), clone(db0)
	be.GroupNormBackward(s, x, gamma, st, dy, dx, dg, db)
	keep("dx", dx)
	keep("dgamma", dg)
	keep("dbeta", db)

	ys, sts := be.Alloc(n), be.Alloc(2*s.N*s.G)
	be.GroupNormSiLU(s, x, gamma, beta, ys, sts)
	keep("silu y", ys)
	keep("silu stats", sts)
	dx, dg, db = clone(dx0), clone(dg0), clone(db0)
	be.GroupNormSiLUBackward(s, x, gamma, beta, sts, dy, dx, dg, db)
	keep("silu dx", dx)
	keep("silu dgamma", dg)
	keep("silu dbeta", db)

	// The unfused composition: GroupNorm → SiLU; SiLUBackward into zeros → GroupNormBackward.
	yu := be.Alloc(n)
	be.SiLU(y, yu)
	keep("unfused silu y", yu)
	keep("unfused silu stats", st)
	gn := be.Alloc(n)
	be.SiLUBackward(y, dy, gn)
	dx, dg, db = clone(dx0), clone(dg0), clone(db0)
	be.GroupNormBackward(s, x, gamma, st, gn, dx, dg, db)
	keep("unfused silu dx", dx)
	keep("unfused silu dgamma", dg)
	keep("unfused silu dbeta", db)
	return out
}

// TestGroupNormSiLUFusedBitExact: GroupNormSiLU and GroupNormSiLUBackward equal the
// unfused compositions bit for bit, with each of group norm's and SiLU's AVX-512 kernels
// and without.
func TestGroupNormSiLUFusedBitExact(t *testing.T) {
	for _, avx := range [][2]bool{{false, false}, {true, true}, {true, false}, {false, true}} {
		if (avx[0] || avx[1]) && !vec.Available {
			continue
		}
		for _, s := range gnShapes {
			o := gnOutputs(t, s, avx[0], avx[1])
			for _, name := range []string{"y", "stats", "dx", "dgamma", "dbeta"} {
				got, want := o["silu "+name], o["unfused silu "+name]
				for i := range want {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Errorf("avx=%v %+v: fused %s[%d] = %v, unfused %v", avx, s, name, i, got[i], want[i])
						break
					}
				}
			}
		}
	}
}

// TestGroupNormVecMatchesScalar compares the AVX-512 path with the scalar loops.
//
// Tolerance: the kernels change only the order of float64 sums (and fuse their
// multiply-adds), so μ, rstd, m1 = mean(g), m2 = mean(g·x̂) and the per-channel sums
// differ by ~1e-16 relative to their terms, which are O(1) here (x ~ 2 ± 0.5, dy,
// gamma ~ N(0, 1)). Rounded to float32 that is the same value or a neighbour: stats
// within 1 ulp. Elementwise the ops are the scalar ones, so a 1-ulp change of μ or
// rstd moves y = (x − μ)·(rstd·gamma) + beta by up to |rstd·gamma|·ulp(μ) + |x − μ|·
// |gamma|·ulp(rstd) ≈ a few ulps at the data's scale of 1, and dx, dgamma, dbeta
// likewise (one more rounding of each sum). So each element must lie within
// 8·2⁻²⁴·max(|want|, 1); in practice most are bit-identical.
func TestGroupNormVecMatchesScalar(t *testing.T) {
	if !vec.Available {
		t.Skip("no AVX-512 on this CPU: the scalar loops are the only path")
	}
	const eps = 8.0 / (1 << 24)
	for _, s := range gnShapes {
		got, want := gnOutputs(t, s, true, true), gnOutputs(t, s, false, true)
		for _, name := range []string{"y", "stats", "dx", "dgamma", "dbeta", "silu y", "silu dx", "silu dgamma", "silu dbeta"} {
			g, w := got[name], want[name]
			same, worst := 0, 0.0
			for i := range w {
				if g[i] == w[i] {
					same++
					continue
				}
				d := math.Abs(float64(g[i])-float64(w[i])) / (eps * max(math.Abs(float64(w[i])), 1))
				worst = max(worst, d)
				if d > 1 || math.IsNaN(d) {
					t.Errorf("%+v %s[%d]: vec %v, scalar %v", s, name, i, g[i], w[i])
					break
				}
			}
			if testing.Verbose() && same < len(w) {
				t.Logf("%+v %s: %d of %d bit-identical, worst %.2f of the tolerance", s, name, same, len(w), worst)
			}
		}
	}
}
