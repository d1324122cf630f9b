package sampler

import (
	"fmt"
	"math"

	"github.com/ddpmgo/ddpm/diffusion"
	"github.com/ddpmgo/ddpm/ops"
)

// Gaussian data: every element of x0 is independent N(mu, v). Then the forward marginal is x_t ~ N(√ᾱ mu, ᾱv + 1 − ᾱ)
// and the exact noise prediction, E[ε | x_t] = −√(1−ᾱ)·∇log p_t(x_t), is affine in x_t:
//
//	ε̂(x_t) = √(1−ᾱ)·(x_t − √ᾱ·mu) / (ᾱ·v + 1 − ᾱ).
//
// With it every sampler's output is an affine function of x_T and of the noise draws, and so Gaussian.
type gaussian struct{ mu, v float64 }

// eps is the exact ε̂ at x_t for ᾱ = ab.
func (g gaussian) eps(ab, xt float64) float64 {
	return math.Sqrt(1-ab) * (xt - math.Sqrt(ab)*g.mu) / (ab*g.v + 1 - ab)
}

// gaussNet is the exact ε̂ as a Denoiser: it reads the float32 timesteps the sampler gives the network and turns them
// into ᾱ as the samplers do (the table at integer t, NoiseLevel's log-σ interpolation between).
type gaussNet struct {
	be  ops.Backend
	s   *diffusion.Schedule
	g   gaussian
	out ops.Buf
}

func (n *gaussNet) Forward(x, t ops.Buf, batch int) ops.Buf {
	th := make([]float32, t.Len())
	n.be.Download(th, t)
	xs := make([]float32, x.Len())
	n.be.Download(xs, x)
	d := len(xs) / batch
	for j := range xs {
		tt := float64(th[j/d])
		ab := diffusion.AlphaBarOfSigma(n.s.NoiseLevel(tt))
		if tt == math.Trunc(tt) {
			ab = n.s.AlphaBar[int(tt)]
		}
		xs[j] = float32(n.g.eps(ab, float64(xs[j])))
	}
	if n.out == nil || n.out.Len() != len(xs) {
		n.out = n.be.Alloc(len(xs))
	}
	n.be.Upload(n.out, xs)
	return n.out
}

// form is an affine function of independent standard normals, c[0] + Σ_{i≥1} c[i]·ξ_i, with ξ_1 = x_T (one element)
// and ξ_{1+k} the draw z of evaluation k.
type form []float64

func (f form) mean() float64 { return f[0] }
func (f form) variance() float64 {
	v := 0.0
	for _, c := range f[1:] {
		v += c * c
	}
	return v
}

// apply is u.At on forms; u must not clip (clipping is not affine).
func apply(u diffusion.Update, x, e, z, p form) form {
	if u.Clip {
		panic("apply: a clipping update is not affine")
	}
	out := make(form, len(x))
	for i := range out {
		var ei, zi, pi float64
		if e != nil {
			ei = e[i]
		}
		if z != nil {
			zi = z[i]
		}
		if p != nil {
			pi = p[i]
		}
		out[i] = u.At(x[i], ei, zi, pi)
	}
	return out
}

// exactRun runs a sampler's plan in float64 on forms, with the exact ε̂ of g at the ᾱ each evaluation stands for,
// and returns the output's mean and variance: the sampler's exact output distribution on Gaussian data, free of
// float32 rounding and of Monte Carlo error.
func exactRun(sp *Sampler, g gaussian) (mean, variance float64) {
	dim := sp.evals + 2
	unit := func(i int) form {
		f := make(form, dim)
		f[i] = 1
		return f
	}
	var bufs [numBufs]form
	get := func(i int) form {
		if i == none {
			return nil
		}
		return bufs[i]
	}
	bufs[bufX] = unit(1)
	var eps form
	for _, in := range sp.plan {
		switch in.op {
		case opEval:
			x := bufs[in.x]
			if in.in.CX != 0 {
				x = apply(in.in, x, nil, nil, nil)
			}
			ab := in.ab
			k := math.Sqrt(1-ab) / (ab*g.v + 1 - ab)
			eps = make(form, dim)
			for i := range eps {
				eps[i] = k * x[i]
			}
			eps[0] -= k * math.Sqrt(ab) * g.mu
		case opNoise:
			bufs[bufZ] = unit(1 + in.k)
		case opUpdate:
			bufs[in.o] = apply(in.u, bufs[in.x], eps, get(in.z), get(in.p))
		case opPosterior:
			i := int(in.t)
			kind, err := diffusion.ParseVarianceKind(defaultStr(sp.opt.Variance, "beta"))
			if err != nil || sp.opt.Clip {
				panic(fmt.Sprint("exactRun: ", err, " clip ", sp.opt.Clip))
			}
			u := diffusion.Update{RA: sp.rs.SqrtRecipAlphaBar[i], RM: sp.rs.SqrtRecipM1AlphaBar[i],
				C0: sp.rs.PosteriorMeanCoef1[i], CX: sp.rs.PosteriorMeanCoef2[i], CZ: sp.rs.Sigma(i, kind)}
			bufs[in.o] = apply(u, bufs[in.x], eps, bufs[in.z], nil)
		case opDDIM:
			if sp.opt.Clip {
				panic("exactRun: clipping DDIM")
			}
			ab, abp := in.ab, in.abp
			sigma := sp.opt.Eta * math.Sqrt((1-abp)/(1-ab)) * math.Sqrt(1-ab/abp)
			u := diffusion.Update{RA: 1 / math.Sqrt(ab), RM: math.Sqrt(1/ab - 1), C0: math.Sqrt(abp),
				CE: math.Sqrt(max(0, 1-abp-sigma*sigma)), CZ: sigma}
			bufs[in.o] = apply(u, bufs[in.x], eps, bufs[in.z], nil)
		}
	}
	r := bufs[sp.result]
	return r.mean(), r.variance()
}

// limit is what a sigma sampler on a grid from sigma0 down to sigmaLast (then its final step to 0, which returns
// the denoised D(x~; sigmaLast) = mu + (x~ − mu)·v/(v + sigmaLast²)) converges to as its steps shrink, started from
// x~ = x_T·√(1 + sigma0²), x_T ~ N(0, 1): with y = x~ − mu and u = v + σ²,
//
//	probability-flow ODE:  dy/dσ = σy/u, so y(σ) = y(σ0)·√(u/u0): mean −mu·√(u/u0), variance (1 + σ0²)·u/u0
//	reverse SDE:           dy = 2σy/u dσ + √(2σ) dw (σ decreasing), so the mean is −mu·u/u0 and the variance
//	                       P(σ) = u + (P0 − u0)·(u/u0)² (it solves dP/du = 2P/u − 1), P0 = 1 + σ0²
//
// at σ = sigmaLast, then the final denoising (a scaling by v/(v + sigmaLast²) and a shift by mu).
func (g gaussian) limit(sde bool, sigma0, sigmaLast float64) (mean, variance float64) {
	u0, u := g.v+sigma0*sigma0, g.v+sigmaLast*sigmaLast
	p0 := 1 + sigma0*sigma0
	var m, p float64
	if sde {
		m, p = -g.mu*u/u0, u+(p0-u0)*(u/u0)*(u/u0)
	} else {
		m, p = -g.mu*math.Sqrt(u/u0), p0*u/u0
	}
	c := g.v / u
	return g.mu + c*m, c * c * p
}

// valueRun runs a sampler's plan in float64 on one element: x_T is xT, the draw of evaluation k is z(k), and eps(ab,
// x) is the network. It follows the plan's ops with their float64 definitions (diffusion.Update.At; the posterior
// and DDIM recomputing ε̂ from the clipped x̂0 written out), clipping included: a replay of what the backend computes.
func valueRun(sp *Sampler, xT float64, z func(k int) float64, eps func(ab, x float64) float64) float64 {
	var bufs [numBufs]float64
	bufs[bufX] = xT
	get := func(i int) float64 {
		if i == none {
			return math.NaN() // must not be read
		}
		return bufs[i]
	}
	var e float64
	for _, in := range sp.plan {
		switch in.op {
		case opEval:
			x := bufs[in.x]
			if in.in.CX != 0 {
				x = in.in.At(x, 0, 0, 0)
			}
			e = eps(in.ab, x)
		case opNoise:
			bufs[bufZ] = z(in.k)
		case opUpdate:
			bufs[in.o] = in.u.At(bufs[in.x], e, get(in.z), get(in.p))
		case opPosterior:
			i := int(in.t)
			kind, _ := diffusion.ParseVarianceKind(defaultStr(sp.opt.Variance, "beta"))
			u := diffusion.Update{RA: sp.rs.SqrtRecipAlphaBar[i], RM: sp.rs.SqrtRecipM1AlphaBar[i], Clip: sp.opt.Clip,
				C0: sp.rs.PosteriorMeanCoef1[i], CX: sp.rs.PosteriorMeanCoef2[i], CZ: sp.rs.Sigma(i, kind)}
			bufs[in.o] = u.At(bufs[in.x], e, bufs[in.z], 0)
		case opDDIM:
			ab, abp, x := in.ab, in.abp, bufs[in.x]
			sigma := sp.opt.Eta * math.Sqrt((1-abp)/(1-ab)) * math.Sqrt(1-ab/abp)
			x0, ee := (x-math.Sqrt(1-ab)*e)/math.Sqrt(ab), e
			if sp.opt.Clip {
				x0 = math.Max(-1, math.Min(1, x0))
				ee = (x - math.Sqrt(ab)*x0) / math.Sqrt(1-ab)
			}
			v := math.Sqrt(abp)*x0 + math.Sqrt(max(0, 1-abp-sigma*sigma))*ee
			if sigma != 0 {
				v += sigma * bufs[in.z]
			}
			bufs[in.o] = v
		}
	}
	return bufs[sp.result]
}
