package vec

import (
	"math"
	"math/rand"
	"testing"
)

// The group-norm kernels are checked bit for bit against plain Go loops that follow
// their documented order (32 partials, combine32) and operations (FMA where the kernel
// fuses, explicit conversions where it does not, so that the compiler fuses nothing),
// on lengths around the block sizes (tails only, exact blocks, bulk + tail).

var gnLengths = []int{1, 7, 15, 16, 17, 31, 32, 33, 63, 64, 100, 1024, 4096 + 29}

func gnData(r *rand.Rand, n int, shift float64) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(shift + r.NormFloat64())
	}
	return x
}

func refCombine(p []float64) float64 {
	var q [8]float64
	for l := range q {
		q[l] = float64(p[l]+p[8+l]) + float64(p[16+l]+p[24+l])
	}
	return float64(float64(q[0]+q[4])+float64(q[2]+q[6])) + float64(float64(q[1]+q[5])+float64(q[3]+q[7]))
}

func TestGroupNormSums(t *testing.T) {
	if !Available {
		t.Skip("no AVX-512 on this CPU")
	}
	r := rand.New(rand.NewSource(5))
	for _, n := range gnLengths {
		x, dy := gnData(r, n, 2), gnData(r, n, 0)
		mu, rstd := 1.9, 0.97
		var ps, pq, pa, pb [32]float64
		for i := range x {
			k := i % 32
			ps[k] += float64(x[i])
			d := float64(x[i]) - mu
			pq[k] = math.FMA(d, d, pq[k])
			pa[k] += float64(dy[i])
			pb[k] = math.FMA(float64(dy[i]), float64(float64(x[i])-mu)*rstd, pb[k])
		}
		if got, want := Sum64(x), refCombine(ps[:]); got != want {
			t.Errorf("n=%d: Sum64 = %v, want %v", n, got, want)
		}
		if got, want := SumSqDev64(x, mu, nil), refCombine(pq[:]); got != want {
			t.Errorf("n=%d: SumSqDev64 = %v, want %v", n, got, want)
		}
		a, b := SumDyDyXhat(dy, x, mu, rstd, dy)
		if wa, wb := refCombine(pa[:]), refCombine(pb[:]); a != wa || b != wb {
			t.Errorf("n=%d: SumDyDyXhat = %v, %v, want %v, %v", n, a, b, wa, wb)
		}
		// A sum is close to the exact one (float64 sums of float32 data: relative ~n·2⁻⁵³).
		var exact float64
		for _, v := range x {
			exact += float64(v)
		}
		if got := Sum64(x); math.Abs(got-exact) > 1e-12*math.Abs(exact)+1e-12 {
			t.Errorf("n=%d: Sum64 = %v, far from %v", n, got, exact)
		}
	}
}

func TestGroupNormElementwise(t *testing.T) {
	if !Available {
		t.Skip("no AVX-512 on this CPU")
	}
	r := rand.New(rand.NewSource(6))
	for _, n := range gnLengths {
		x, dy, dx0 := gnData(r, n+3, 2), gnData(r, n, 0), gnData(r, n+3, 0)
		m, a, b := float32(1.93), float32(0.71), float32(-0.3)
		y := make([]float32, n+3)
		Affine(x[:n], y, m, a, b, dy)
		for i := range n {
			if want := float32(float32(x[i]-m)*a) + b; y[i] != want {
				t.Fatalf("n=%d: Affine[%d] = %v, want %v", n, i, y[i], want)
			}
		}
		for i := n; i < n+3; i++ {
			if y[i] != 0 {
				t.Fatalf("n=%d: Affine wrote past len(x) at %d", n, i)
			}
		}
		mu, rstd, gc, m1, m2 := 1.9, 0.97, 1.3, 0.01, -0.2
		for _, set := range []bool{false, true} { // set: dx = … over whatever dx held
			dx := append([]float32(nil), dx0...)
			GroupNormDx(dy, x, dx, mu, rstd, gc, m1, m2, x, nil, set)
			for i := range n {
				xh := float64(float64(x[i])-mu) * rstd
				v := float32(rstd * float64(float64(float64(dy[i])*gc)-m1-float64(xh*m2)))
				want := dx0[i] + v
				if set {
					want = v
				}
				if dx[i] != want {
					t.Fatalf("n=%d set=%v: GroupNormDx[%d] = %v, want %v", n, set, i, dx[i], want)
				}
			}
			for i := n; i < n+3; i++ {
				if dx[i] != dx0[i] {
					t.Fatalf("n=%d set=%v: GroupNormDx wrote past len(dy) at %d", n, set, i)
				}
			}
		}
	}
}

// TestGroupNormSiLUGrad: the one-pass kernel equals Affine, SiLUBackward into zeros
// and SumDyDyXhat bit for bit, including where gn is ±0 and at large |n|.
func TestGroupNormSiLUGrad(t *testing.T) {
	if !Available {
		t.Skip("no AVX-512 on this CPU")
	}
	r := rand.New(rand.NewSource(7))
	for _, n := range gnLengths {
		x, dy := gnData(r, n, 2), gnData(r, n, 0)
		for i := 0; i < n; i += 13 {
			dy[i] = 0 // gn = +0 from dy·… = ±0
			if i+5 < n {
				x[i+5] = float32(60 * r.NormFloat64()) // saturated SiLU
			}
		}
		m, a, b := float32(1.93), float32(3.1), float32(-0.3)
		mu, rstd := 1.9, 0.97
		gn := make([]float32, n+3)
		ga, gb := GroupNormSiLUGrad(x, dy, gn[:n], m, a, b, mu, rstd, gn)
		nv, want := make([]float32, n), make([]float32, n)
		Affine(x, nv, m, a, b, nil)
		SiLUBackward(nv, dy, want)
		wa, wb := SumDyDyXhat(want, x, mu, rstd, nil)
		for i := range want {
			if math.Float32bits(gn[i]) != math.Float32bits(want[i]) {
				t.Fatalf("n=%d: gn[%d] = %v, want %v", n, i, gn[i], want[i])
			}
		}
		if gn[n] != 0 {
			t.Fatalf("n=%d: wrote past len(gn)", n)
		}
		if ga != wa || gb != wb {
			t.Errorf("n=%d: sums %v, %v, want %v, %v", n, ga, gb, wa, wb)
		}
	}
}

// TestAffineSiLU: the one-pass kernel equals Affine then SiLU bit for bit.
func TestAffineSiLU(t *testing.T) {
	if !Available {
		t.Skip("no AVX-512 on this CPU")
	}
	r := rand.New(rand.NewSource(8))
	for _, n := range gnLengths {
		x := gnData(r, n, 2)
		for i := 0; i+5 < n; i += 13 {
			x[i+5] = float32(60 * r.NormFloat64())
		}
		m, a, b := float32(1.93), float32(3.1), float32(-0.3)
		y, want := make([]float32, n+3), make([]float32, n)
		AffineSiLU(x, y[:n], m, a, b, x)
		Affine(x, want, m, a, b, nil)
		SiLU(want, want)
		for i := range want {
			if math.Float32bits(y[i]) != math.Float32bits(want[i]) {
				t.Fatalf("n=%d: y[%d] = %v, want %v", n, i, y[i], want[i])
			}
		}
		if y[n] != 0 {
			t.Fatalf("n=%d: wrote past len(x)", n)
		}
	}
}
