package nll

import (
	"context"
	"math"
	"testing"

	"github.com/ddpmgo/ddpm/cpu"
	"github.com/ddpmgo/ddpm/diffusion"
	"github.com/ddpmgo/ddpm/ops"
	"github.com/ddpmgo/ddpm/rng"
)

// gaussNet is the exact ε̂ for data whose elements are independent N(mu, v): E[ε | x_t] = √(1−ᾱ)(x_t − √ᾱ mu)/(ᾱv +
// 1 − ᾱ).
type gaussNet struct {
	be    ops.Backend
	s     *diffusion.Schedule
	mu, v float64
	out   ops.Buf
}

func (n *gaussNet) Forward(x, t ops.Buf, batch int) ops.Buf {
	th := make([]float32, t.Len())
	n.be.Download(th, t)
	xs := make([]float32, x.Len())
	n.be.Download(xs, x)
	d := len(xs) / batch
	for j := range xs {
		ab := n.s.AlphaBar[int(th[j/d])]
		xs[j] = float32(math.Sqrt(1-ab) * (float64(xs[j]) - math.Sqrt(ab)*n.mu) / (ab*n.v + 1 - ab))
	}
	if n.out == nil || n.out.Len() != len(xs) {
		n.out = n.be.Alloc(len(xs))
	}
	n.be.Upload(n.out, xs)
	return n.out
}

// closedForm is the bound per element, in nats, of the exact-ε̂ model on N(mu, v) data, in closed form, its terms
// as expectations over x0 ~ N(mu, v) and x_t ~ q(x_t | x0):
//
//	L_T:       (−log(1−ᾱ) + (1−ᾱ) + ᾱ(mu² + v) − 1)/2,   ᾱ = ᾱ_{T−1}
//	L_t, t≥1:  (log σ_p² − log β̃_t + β̃_t/σ_p² − 1 + c1_t²·Var(x0 | x_t)/σ_p²)/2
//	           since μ̃_t − μ_θ = c1_t·(x0 − E[x0 | x_t]) when ε̂ = E[ε | x_t], and Var(x0 | x_t) = v(1−ᾱ_t)/(ᾱ_t v + 1 − ᾱ_t)
//	L_0:       E_w[−log P(w − δ < σ_0·N(0, 1) < w + δ)],  w = x0 − μ_θ ~ N(0, Var(x0 | x_0)) (c1_0 = 1, c2_0 = 0),
//	           δ = 1/255, by Simpson's rule (x0 stays 4.5 sd inside (−1, 1), so the open edge bins do not matter)
func closedForm(s *diffusion.Schedule, mu, v float64, kind diffusion.VarianceKind) (prior, dec, kl float64) {
	ab := s.AlphaBar[s.T-1]
	prior = 0.5 * (-math.Log(1-ab) + (1 - ab) + ab*(mu*mu+v) - 1)
	post := func(t int) float64 { a := s.AlphaBar[t]; return v * (1 - a) / (a*v + 1 - a) }
	for t := 1; t < s.T; t++ {
		lq, lp := s.PosteriorLogVarianceClipped[t], s.ModelLogVariance(t, kind)
		c1 := s.PosteriorMeanCoef1[t]
		kl += 0.5 * (lp - lq + math.Exp(lq-lp) - 1 + c1*c1*post(t)*math.Exp(-lp))
	}
	sw := math.Sqrt(post(0))
	sd := math.Exp(s.ModelLogVariance(0, kind) / 2)
	const n = 4000
	h := 24 * sw / n
	for i := 0; i <= n; i++ {
		w := -12*sw + float64(i)*h
		c := 2.0
		if i == 0 || i == n {
			c = 1
		} else if i%2 == 1 {
			c = 4
		}
		// −log P(bin) with the decoder's mean w below x0: DiscretizedGaussianLogLikelihood(0, −w, log σ_0).
		dec += c * math.Exp(-w*w/(2*sw*sw)) / (sw * math.Sqrt(2*math.Pi)) * -diffusion.DiscretizedGaussianLogLikelihood(0, -w, math.Log(sd))
	}
	dec *= h / 3
	return prior, dec, kl
}

// TestGaussianBoundMatchesClosedForm: the estimator, with the exact ε̂ of Gaussian data as its network, gives the
// closed-form bound (both modes, both variances) within 4 standard errors, its standard error is below 0.5% of the
// bound, and its prior and decoder parts match theirs; a slightly wrong network (ε̂ scaled by 1.05) is seen to be
// worse by many standard errors.
func TestGaussianBoundMatchesClosedForm(t *testing.T) {
	s, err := diffusion.Linear(1000, 1e-4, 0.02)
	if err != nil {
		t.Fatal(err)
	}
	const mu, v, D = 0.1, 0.04, 1024
	be := cpu.New()
	data := func(n int) []float32 {
		x := make([]float32, n*D)
		rng.FillNormal(x, 99, rng.StreamInit, 0)
		for i := range x {
			x[i] = float32(mu + math.Sqrt(v)*float64(x[i]))
		}
		return x
	}
	bits := 1 / math.Ln2
	for _, c := range []struct {
		kind    diffusion.VarianceKind
		n, k    int
		scaleEp float64
	}{
		{diffusion.VarBeta, 4, 0, 1},
		{diffusion.VarPosterior, 4, 0, 1},
		{diffusion.VarBeta, 300, 10, 1},
		{diffusion.VarBeta, 4, 0, 1.5},
	} {
		x0 := data(c.n)
		var net Denoiser = &gaussNet{be: be, s: s, mu: mu, v: v}
		if c.scaleEp != 1 {
			net = scaled{net.(*gaussNet), be, float32(c.scaleEp)}
		}
		calls := 0
		res, err := Evaluate(context.Background(), be, net, s, x0, c.n, D, Options{Variance: c.kind, TPerImage: c.k, Batch: 50, Seed: 4},
			func(done, total int) { calls++ })
		if err != nil {
			t.Fatal(err)
		}
		p, d, k := closedForm(s, mu, v, c.kind)
		want := (p + d + k) * bits
		t.Logf("%v K=%d ε̂×%g: %s %.5f ± %.5f bits/dim (prior %.2e, decoder %.4f, KL %.4f); closed form %.5f (prior %.2e, "+
			"decoder %.4f, KL %.4f)", c.kind, c.k, c.scaleEp, res.Mode, res.BPD, res.StdErr, res.PriorBPD, res.DecBPD, res.KLBPD,
			want, p*bits, d*bits, k*bits)
		terms := 1000
		if c.k > 0 {
			terms = 1 + c.k
		}
		if want := (c.n*terms + 49) / 50; calls != want || res.Evals != c.n*terms {
			t.Errorf("progress called %d times, want %d (batches of 50); %d evaluations, want %d", calls, want, res.Evals, c.n*terms)
		}
		dev := math.Abs(res.BPD-want) / res.StdErr
		if c.scaleEp != 1 {
			if !(res.BPD-want > 10*res.StdErr) {
				t.Errorf("ε̂ × %g: bound %.5f ± %.5f, not clearly above the exact model's %.5f", c.scaleEp, res.BPD, res.StdErr, want)
			}
			continue
		}
		if !(dev <= 4) || res.StdErr > 0.005*want {
			t.Errorf("%v K=%d: %.5f ± %.5f bits/dim, closed form %.5f (%.1f standard errors)", c.kind, c.k, res.BPD, res.StdErr, want, dev)
		}
		if math.Abs(res.PriorBPD-p*bits) > 0.05*p*bits || math.Abs(res.DecBPD-d*bits) > 0.02*d*bits {
			t.Errorf("%v K=%d: prior %.3g decoder %.5f, closed form %.3g %.5f", c.kind, c.k, res.PriorBPD, res.DecBPD, p*bits, d*bits)
		}
	}
}

// scaled multiplies a network's output.
type scaled struct {
	n  *gaussNet
	be ops.Backend
	f  float32
}

func (s scaled) Forward(x, t ops.Buf, batch int) ops.Buf {
	out := s.n.Forward(x, t, batch)
	s.be.Scale(s.f, out)
	return out
}

// TestSameSeedSameResultAnyBatch: the batch does not change the numbers; the seed does.
func TestSameSeedSameResultAnyBatch(t *testing.T) {
	s, _ := diffusion.Linear(50, 1e-4, 0.02)
	be := cpu.New()
	x0 := make([]float32, 5*16)
	rng.FillNormal(x0, 1, rng.StreamInit, 0)
	for i := range x0 {
		x0[i] *= 0.3
	}
	run := func(batch int, seed uint64, k int) Result {
		r, err := Evaluate(context.Background(), be, &gaussNet{be: be, s: s, v: 0.09}, s, x0, 5, 16,
			Options{Variance: diffusion.VarBeta, TPerImage: k, Batch: batch, Seed: seed}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	for _, k := range []int{0, 7} {
		a, b, c := run(7, 1, k), run(50, 1, k), run(7, 2, k)
		if a != b {
			t.Errorf("K=%d: batch 7 %+v, batch 50 %+v", k, a, b)
		}
		if a.BPD == c.BPD {
			t.Errorf("K=%d: seeds 1 and 2 gave the same bound", k)
		}
	}
	if _, err := Evaluate(context.Background(), be, &gaussNet{be: be, s: s}, s, x0, 5, 15, Options{Batch: 1}, nil); err == nil {
		t.Error("wrong length accepted")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Evaluate(ctx, be, &gaussNet{be: be, s: s}, s, x0, 5, 16, Options{Batch: 1}, nil); err == nil {
		t.Error("cancelled context: no error")
	}
}

// TestStrata: the strata cover 1 … T−1 without gaps or empty strata, and grow.
func TestStrata(t *testing.T) {
	for _, c := range [][2]int{{1, 1000}, {10, 1000}, {20, 1000}, {999, 1000}, {3, 4}, {7, 50}} {
		K, T := c[0], c[1]
		b := Strata(K, T)
		if len(b) != K+1 || b[0] != 1 || b[K] != T {
			t.Fatalf("Strata(%d, %d) = %v", K, T, b)
		}
		for k := range K {
			if b[k+1] <= b[k] {
				t.Fatalf("Strata(%d, %d) = %v: stratum %d empty", K, T, b, k)
			}
		}
	}
	if b := Strata(10, 1000); b[1] != 2 || b[9] != 501 {
		t.Errorf("Strata(10, 1000) = %v, want 1, 2, 4, …, 501, 1000", b)
	}
}
