package rng

import (
	"fmt"
	"math"
	"slices"
	"testing"
)

// TestFillMatchesPerElement checks that the bulk fillers equal the per-draw functions bit for bit, for offsets and
// lengths that are not multiples of 4 and for a length that takes the parallel path.
func TestFillMatchesPerElement(t *testing.T) {
	const seed = 0x0123456789abcdef
	cases := []struct {
		offset uint64
		n      int
	}{
		{0, 0}, {0, 1}, {1, 2}, {3, 5}, {2, 17}, {5, 4}, {1<<32 - 3, 11}, {^uint64(0) - 6, 6},
		{7, parallelMin + 13},
	}
	for _, c := range cases {
		norm := make([]float32, c.n)
		unif := make([]float32, c.n)
		u32 := make([]uint32, c.n)
		ints := make([]int, c.n)
		FillNormal(norm, seed, StreamNoise, c.offset)
		FillUniform(unif, seed, StreamNoise, c.offset)
		FillUint32(u32, seed, StreamNoise, c.offset)
		FillIntn(ints, seed, StreamNoise, c.offset, 1000)
		for j := 0; j < c.n; j++ {
			i := c.offset + uint64(j)
			if w := Normal(seed, StreamNoise, i); math.Float32bits(norm[j]) != math.Float32bits(w) {
				t.Fatalf("offset %d n %d: FillNormal[%d] = %v, Normal(i=%d) = %v", c.offset, c.n, j, norm[j], i, w)
			}
			if w := Uniform(seed, StreamNoise, i); math.Float32bits(unif[j]) != math.Float32bits(w) {
				t.Fatalf("offset %d n %d: FillUniform[%d] = %v, Uniform(i=%d) = %v", c.offset, c.n, j, unif[j], i, w)
			}
			if w := Uint32(seed, StreamNoise, i); u32[j] != w {
				t.Fatalf("offset %d n %d: FillUint32[%d] = %#x, Uint32(i=%d) = %#x", c.offset, c.n, j, u32[j], i, w)
			}
			if w := Intn(seed, StreamNoise, i, 1000); ints[j] != w {
				t.Fatalf("offset %d n %d: FillIntn[%d] = %d, Intn(i=%d) = %d", c.offset, c.n, j, ints[j], i, w)
			}
		}
	}
}

// TestNormalLanes pins which Box-Muller output each index gets (the documented lane mapping).
func TestNormalLanes(t *testing.T) {
	for _, blk := range []uint64{0, 1, 1 << 40} {
		w := Block(9, StreamSampler, blk)
		z0, z1 := BoxMuller(w[0], w[1])
		z2, z3 := BoxMuller(w[2], w[3])
		for lane, want := range []float32{z0, z1, z2, z3} {
			if got := Normal(9, StreamSampler, 4*blk+uint64(lane)); got != want {
				t.Errorf("Normal(block %d lane %d) = %v, want %v", blk, lane, got, want)
			}
		}
	}
}

const statN = 1 << 20

// TestUniformStatistics: mean within 5 standard errors of 1/2 (SE = sqrt(1/12/N)), and a 256-bin chi-square
// statistic within 5 standard deviations of its mean (df = 255, sd = sqrt(2 df)).
func TestUniformStatistics(t *testing.T) {
	u := make([]float32, statN)
	FillUniform(u, 2024, StreamInit, 0)
	var sum float64
	var bins [256]int
	for _, v := range u {
		sum += float64(v)
		bins[int(v*256)]++
	}
	mean := sum / statN
	if se := math.Sqrt(1.0 / 12 / statN); math.Abs(mean-0.5) > 5*se {
		t.Errorf("uniform mean %.6f, want 0.5 +- %.6f", mean, 5*se)
	}
	chi2 := chiSquare(bins[:], float64(statN)/256)
	checkChi2(t, "uniform 256 bins", chi2, 255)
}

func chiSquare(counts []int, expected float64) float64 {
	var chi2 float64
	for _, c := range counts {
		d := float64(c) - expected
		chi2 += d * d / expected
	}
	return chi2
}

func checkChi2(t *testing.T, what string, chi2 float64, df int) {
	t.Helper()
	sd := math.Sqrt(2 * float64(df))
	if math.Abs(chi2-float64(df)) > 5*sd {
		t.Errorf("%s: chi-square %.1f, want %d +- %.1f (5 sd)", what, chi2, df, 5*sd)
	}
}

// TestNormalStatistics: the raw moments E[x^k], k = 1..4, within 5 standard errors of N(0, 1)'s 0, 1, 0, 3 (the SE
// is sqrt(Var(x^k)/N) with Var(x^k) = 1, 2, 15, 96), the Kolmogorov-Smirnov distance below the alpha = 1e-4 critical
// value sqrt(ln(2/alpha)/2)/sqrt(N), and the 3-sigma tail mass within 5 SE of erfc(3/sqrt 2).
func TestNormalStatistics(t *testing.T) {
	z := make([]float32, statN)
	FillNormal(z, 77, StreamNoise, 12345)
	var m1, m2, m3, m4 float64
	tail := 0
	for _, v := range z {
		x := float64(v)
		m1 += x
		m2 += x * x
		m3 += x * x * x
		m4 += x * x * x * x
		if math.Abs(x) > 3 {
			tail++
		}
	}
	m1, m2, m3, m4 = m1/statN, m2/statN, m3/statN, m4/statN
	n := float64(statN)
	check := func(name string, got, want, se float64) {
		if math.Abs(got-want) > 5*se {
			t.Errorf("normal %s = %.5f, want %.5f +- %.5f", name, got, want, 5*se)
		}
	}
	check("mean", m1, 0, 1/math.Sqrt(n))
	check("E[x^2]", m2, 1, math.Sqrt(2/n))
	check("E[x^3]", m3, 0, math.Sqrt(15/n))
	check("E[x^4]", m4, 3, math.Sqrt(96/n))
	pTail := math.Erfc(3 / math.Sqrt2)
	check("P(|x|>3)", float64(tail)/n, pTail, math.Sqrt(pTail*(1-pTail)/n))

	s := make([]float64, statN)
	for i, v := range z {
		s[i] = float64(v)
	}
	slices.Sort(s)
	d := 0.0
	for i, x := range s {
		cdf := 0.5 * math.Erfc(-x/math.Sqrt2)
		d = max(d, math.Abs(cdf-float64(i)/n), math.Abs(cdf-float64(i+1)/n))
	}
	if crit := math.Sqrt(math.Log(2e4)/2) / math.Sqrt(n); d > crit {
		t.Errorf("normal KS distance %.5f, want < %.5f", d, crit)
	}
}

// TestIndependence: Pearson correlations between normals of adjacent streams, adjacent seeds, adjacent draw indices
// (lag 1 and lag 4: the two Box-Muller partners and the same lane of the next block) are within 5/sqrt(N) of 0, and
// consecutive uniform pairs fill a 16x16 grid evenly (chi-square, df = 255).
func TestIndependence(t *testing.T) {
	const n = 1 << 18
	a := make([]float32, n+4)
	b := make([]float32, n)
	c := make([]float32, n)
	FillNormal(a, 5, StreamNoise, 0)
	FillNormal(b, 5, StreamNoise+1, 0)
	FillNormal(c, 6, StreamNoise, 0)
	bound := 5 / math.Sqrt(n)
	for _, p := range []struct {
		name string
		x, y []float32
	}{
		{"adjacent streams", a[:n], b},
		{"adjacent seeds", a[:n], c},
		{"lag 1", a[:n], a[1 : n+1]},
		{"lag 2", a[:n], a[2 : n+2]},
		{"lag 4", a[:n], a[4 : n+4]},
	} {
		if r := correlation(p.x, p.y); math.Abs(r) > bound {
			t.Errorf("%s: correlation %.5f, want |r| < %.5f", p.name, r, bound)
		}
	}
	// Box-Muller partners are uncorrelated but not independent if the transform is wrong (e.g. radius reused
	// without the angle); their squares must be uncorrelated too.
	sq := func(x []float32) []float32 {
		out := make([]float32, len(x))
		for i, v := range x {
			out[i] = v * v
		}
		return out
	}
	even, odd := make([]float32, n/2), make([]float32, n/2)
	for i := range even {
		even[i], odd[i] = a[2*i], a[2*i+1]
	}
	if r := correlation(sq(even), sq(odd)); math.Abs(r) > 5/math.Sqrt(n/2) {
		t.Errorf("squares of Box-Muller partners: correlation %.5f, want |r| < %.5f", r, 5/math.Sqrt(n/2))
	}

	u := make([]float32, 2*n)
	FillUniform(u, 5, StreamFlip, 3)
	var grid [256]int
	for i := 0; i+1 < len(u); i++ {
		grid[int(u[i]*16)*16+int(u[i+1]*16)]++
	}
	checkChi2(t, "consecutive uniform pairs 16x16", chiSquare(grid[:], float64(len(u)-1)/256), 255)
}

func correlation(x, y []float32) float64 {
	var sx, sy, sxx, syy, sxy float64
	for i := range x {
		a, b := float64(x[i]), float64(y[i])
		sx += a
		sy += b
		sxx += a * a
		syy += b * b
		sxy += a * b
	}
	n := float64(len(x))
	cov := sxy/n - sx/n*sy/n
	return cov / math.Sqrt((sxx/n-sx/n*sx/n)*(syy/n-sy/n*sy/n))
}

func TestIntnRangeAndUniformity(t *testing.T) {
	for _, n := range []int{1, 2, 10, 1000} {
		counts := make([]int, n)
		const draws = 200000
		for i := uint64(0); i < draws; i++ {
			k := Intn(31, StreamTimestep, i, n)
			if k < 0 || k >= n {
				t.Fatalf("Intn(n=%d) = %d out of range", n, k)
			}
			counts[k]++
		}
		if n > 1 {
			checkChi2(t, "Intn", chiSquare(counts, float64(draws)/float64(n)), n-1)
		}
	}
	// The extremes of the multiply-shift map: word 0 -> 0, word 2^32-1 -> n-1.
	for _, n := range []int{1, 7, 1 << 32} {
		if got := intnFromBits(0, n); got != 0 {
			t.Errorf("intnFromBits(0, %d) = %d, want 0", n, got)
		}
		if got := intnFromBits(^uint32(0), n); got != n-1 {
			t.Errorf("intnFromBits(2^32-1, %d) = %d, want %d", n, got, n-1)
		}
	}
	for _, n := range []int{0, -1, 1<<32 + 1} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Intn(n=%d) did not panic", n)
				}
			}()
			Intn(1, 1, 1, n)
		}()
	}
}

func TestPerm(t *testing.T) {
	for _, n := range []int{0, 1, 2, 10, 1000} {
		p := Perm(3, StreamShuffle, 0, n)
		seen := make([]bool, n)
		for _, v := range p {
			if v < 0 || v >= n || seen[v] {
				t.Fatalf("Perm(n=%d) = %v is not a permutation", n, p)
			}
			seen[v] = true
		}
		if n > 0 && !slices.Equal(p, Perm(3, StreamShuffle, 0, n)) {
			t.Errorf("Perm(n=%d) not deterministic", n)
		}
	}
	if slices.Equal(Perm(3, StreamShuffle, 0, 1000), Perm(3, StreamShuffle, 999, 1000)) {
		t.Error("Perm with offsets 0 and 999 (the next epoch) gave the same order")
	}
	// All 3! orders of [0,1,2] equally likely: epochs at offset stride 2 (= n-1 draws each), chi-square df = 5.
	const trials = 60000
	counts := map[[3]int]int{}
	for e := uint64(0); e < trials; e++ {
		p := Perm(11, StreamShuffle, 2*e, 3)
		counts[[3]int(p)]++
	}
	if len(counts) != 6 {
		t.Fatalf("Perm(n=3) produced %d distinct orders, want 6", len(counts))
	}
	var c []int
	for _, v := range counts {
		c = append(c, v)
	}
	checkChi2(t, "Perm(n=3) orders", chiSquare(c, trials/6.0), 5)
}

// BenchmarkFillNormal: one Philox block (10 rounds of two 32x32->64 multiplies) and two Box-Muller pairs (one ln,
// one sqrt, one sin/cos polynomial each) per four normals; measured ~30 ns per normal on one core of the project's
// 2-core Xeon (~10 ns per word for Philox alone), i.e. ~130 MB/s per core.
func BenchmarkFillNormal(b *testing.B) {
	for _, n := range []int{1 << 10, 1 << 20} {
		dst := make([]float32, n)
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.SetBytes(int64(4 * n))
			for i := 0; b.Loop(); i++ {
				FillNormal(dst, 1, StreamNoise, uint64(i*n))
			}
		})
	}
}
