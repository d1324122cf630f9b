package sampler

import (
	"context"
	"math"
	"testing"

	"github.com/ddpmgo/ddpm/cpu"
	"github.com/ddpmgo/ddpm/diffusion"
	"github.com/ddpmgo/ddpm/ops"
	"github.com/ddpmgo/ddpm/rng"
)

// shrink is a deliberately imperfect predictor, ε̂ = 0.5·x_t, whose output depends on the noise.
type shrink struct {
	be  ops.Backend
	out ops.Buf
}

func (s *shrink) Forward(x, t ops.Buf, batch int) ops.Buf {
	if s.out == nil || s.out.Len() != x.Len() {
		s.out = s.be.Alloc(x.Len())
	}
	s.be.Copy(s.out, x)
	s.be.Scale(0.5, s.out)
	return s.out
}

func schedule(t *testing.T, T int) *diffusion.Schedule {
	t.Helper()
	s, err := diffusion.New("linear", T, 1e-4, 0.02)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func sample(t *testing.T, net func(ops.Backend) Denoiser, s *diffusion.Schedule, opt Options, n, batch, d int, xT []float32) []float32 {
	t.Helper()
	be := cpu.New()
	sp, err := New(be, s, opt, batch, d)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float32, n*d)
	calls := 0
	if err := sp.Sample(context.Background(), net(be), n, xT, out, func(done, total int) { calls++ }); err != nil {
		t.Fatal(err)
	}
	if want := (n + batch - 1) / batch * sp.Evals(); calls != want {
		t.Errorf("progress called %d times, want %d", calls, want)
	}
	return out
}

// TestSamplersLandOnAPointMass: for data concentrated at the single value c the exact predictor is
// ε̂(x_t, t) = (x_t − √ᾱ_t·c)/√(1−ᾱ_t) (gaussNet with v = 0), and every sampler, with or without clipping, must
// land on c.
func TestSamplersLandOnAPointMass(t *testing.T) {
	s := schedule(t, 100)
	for _, opt := range []Options{
		{Sampler: "ddpm", Clip: true, Variance: "beta", Seed: 1},
		{Sampler: "ddpm", Clip: false, Variance: "posterior", Seed: 2},
		{Sampler: "ddpm", Steps: 9, Clip: true, Variance: "fixed_small", Spacing: "trailing", Seed: 2},
		{Sampler: "ddim", Steps: 10, Eta: 0, Clip: true, Seed: 3},
		{Sampler: "ddim", Steps: 7, Eta: 1, Clip: false, Seed: 4},
		{Sampler: "ddim", Steps: 7, Eta: 0.5, Clip: true, UnclippedEps: true, Spacing: "linspace", Seed: 4},
		{Sampler: "euler", Steps: 6, Clip: true, Seed: 5},
		{Sampler: "euler_maruyama", Steps: 12, Seed: 5},
		{Sampler: "heun", Steps: 5, Seed: 6},
		{Sampler: "heun", Steps: 5, Churn: 3, Clip: true, Spacing: "trailing", Seed: 6},
		{Sampler: "dpmpp2m", Steps: 6, Seed: 7},
		{Sampler: "dpmpp2m", Steps: 6, Clip: true, Spacing: "karras", Seed: 7},
	} {
		net := func(be ops.Backend) Denoiser { return &gaussNet{be: be, s: s, g: gaussian{mu: 0.5}} }
		out := sample(t, net, s, opt, 5, 2, 12, nil)
		for i, v := range out {
			if math.Abs(float64(v)-0.5) > 1e-3 {
				t.Fatalf("%+v: sample value %d = %v, want 0.5", opt, i, v)
			}
		}
	}
}

func TestSameSeedSameBitsAnyBatch(t *testing.T) {
	s := schedule(t, 40)
	net := func(be ops.Backend) Denoiser { return &shrink{be: be} }
	for _, opt := range []Options{
		{Sampler: "ddim", Steps: 8, Eta: 0, Clip: true, Seed: 3},
		{Sampler: "ddim", Steps: 8, Eta: 0.5, Clip: true, Seed: 3},
		{Sampler: "ddpm", Clip: true, Variance: "beta", Seed: 3},
		{Sampler: "ddpm", Steps: 9, Clip: true, Variance: "beta", Seed: 3},
		{Sampler: "euler_maruyama", Steps: 8, Clip: true, Seed: 3},
		{Sampler: "heun", Steps: 4, Churn: 2, Clip: true, Seed: 3},
	} {
		a := sample(t, net, s, opt, 7, 7, 10, nil)
		b := sample(t, net, s, opt, 7, 7, 10, nil)
		c := sample(t, net, s, opt, 7, 3, 10, nil) // three batches: 3, 3, 1
		for i := range a {
			if math.Float32bits(a[i]) != math.Float32bits(b[i]) || math.Float32bits(a[i]) != math.Float32bits(c[i]) {
				t.Fatalf("%+v: element %d: %v %v %v", opt, i, a[i], b[i], c[i])
			}
		}
		opt.Seed = 4
		d := sample(t, net, s, opt, 7, 7, 10, nil)
		same := 0
		for i := range a {
			if a[i] == d[i] {
				same++
			}
		}
		if same == len(a) {
			t.Errorf("%+v: another seed gave the same samples", opt)
		}
	}
}

// TestCounterMapping checks the documented noise indices: x_T from draws j·D…, and the DDPM z of step k from draws
// (k·n + j)·D…, by replaying the sampler on the host with the float64 reference step of package diffusion.
func TestCounterMapping(t *testing.T) {
	const T, n, d, seed = 20, 3, 5, 11
	s := schedule(t, T)
	opt := Options{Sampler: "ddpm", Clip: true, Variance: "beta", Seed: seed}
	got := sample(t, func(be ops.Backend) Denoiser { return &shrink{be: be} }, s, opt, n, 2, d, nil)

	x := make([]float32, n*d)
	rng.FillNormal(x, seed, rng.StreamSampler, 0)
	// With x_T given explicitly as those draws, the output is the same.
	init := sample(t, func(be ops.Backend) Denoiser { return &shrink{be: be} }, s, opt, n, 3, d, append([]float32(nil), x...))
	for i := range got {
		if got[i] != init[i] {
			t.Fatalf("-init with the drawn x_T differs at %d: %v vs %v", i, got[i], init[i])
		}
	}
	ref := make([]float64, n*d)
	for i := range ref {
		ref[i] = float64(x[i])
	}
	for k := 1; k <= T; k++ {
		tt := T - k
		for i := range ref {
			z := float64(rng.Normal(seed, rng.StreamSampler, uint64(k*n*d+i)))
			ref[i] = s.DDPMStepAt(tt, ref[i], 0.5*ref[i], z, diffusion.VarBeta, true)
		}
	}
	for i := range ref {
		if math.Abs(ref[i]-float64(got[i])) > 1e-4 {
			t.Fatalf("element %d: sampler %v, host replay %v", i, got[i], ref[i])
		}
	}
}

func TestOptionsAreChecked(t *testing.T) {
	s := schedule(t, 10)
	be := cpu.New()
	for _, opt := range []Options{
		{Sampler: "ddpm", Steps: 11},
		{Sampler: "ddim", Steps: 11},
		{Sampler: "ddim", Steps: 5, Eta: 2},
		{Sampler: "lms", Steps: 5},
		{Sampler: "ddpm", Variance: "large"},
		{Sampler: "ddim", Steps: 5, Spacing: "karras"},
		{Sampler: "heun", Steps: 5, Spacing: "uniform"},
		{Sampler: "heun", Steps: 5, Churn: -1},
		{Sampler: "dpmpp2m", Steps: 10},                      // linspace needs steps < T
		{Sampler: "euler", Steps: 5, Variance: "fixed_huge"}, // checked even where unused
	} {
		if _, err := New(be, s, opt, 1, 1); err == nil {
			t.Errorf("%+v accepted", opt)
		}
	}
}

// TestSampleRangeSharesAreSample: drawing images [0, 3), [3, 5) and [5, 7) separately (as data-parallel ranks draw
// their shares of a grid) gives Sample's images bit for bit, and leaves the rest of out alone.
func TestSampleRangeSharesAreSample(t *testing.T) {
	s := schedule(t, 40)
	const n, d = 7, 10
	for _, opt := range []Options{
		{Sampler: "ddim", Steps: 8, Eta: 0.5, Clip: true, Seed: 3},
		{Sampler: "ddpm", Clip: true, Variance: "beta", Seed: 3},
	} {
		want := sample(t, func(be ops.Backend) Denoiser { return &shrink{be: be} }, s, opt, n, 2, d, nil)
		got := make([]float32, n*d)
		for _, r := range [][2]int{{0, 3}, {3, 5}, {5, 7}} {
			be := cpu.New()
			sp, err := New(be, s, opt, 2, d)
			if err != nil {
				t.Fatal(err)
			}
			part := make([]float32, n*d)
			if err := sp.SampleRange(context.Background(), &shrink{be: be}, n, r[0], r[1], nil, part, nil); err != nil {
				t.Fatal(err)
			}
			for i, v := range part {
				if inside := i >= r[0]*d && i < r[1]*d; !inside && v != 0 {
					t.Fatalf("%+v: range %v wrote element %d outside it", opt, r, i)
				}
			}
			copy(got[r[0]*d:r[1]*d], part[r[0]*d:r[1]*d])
		}
		for i := range want {
			if math.Float32bits(want[i]) != math.Float32bits(got[i]) {
				t.Fatalf("%+v: element %d: shares %v, Sample %v", opt, i, got[i], want[i])
			}
		}
	}
}
