package diffusion

import "math"

// Update is the affine step that every sampler step of this package except DDPM's posterior (DDPMStep) and DDIM with
// eps^ recomputed from a clipped x0^ (DDIMStep) reduces to, one element at a time:
//
//	x0^ = RA x - RM e,   clipped to [-1, 1] if Clip
//	out = CX x + C0 x0^ + CE e + CZ z + CP p
//
// x is the sampler's state, e the network's eps^ at it, z a standard normal draw and p a second state (a previous
// data prediction, a half step). A term whose coefficient is 0 is left out, and its operand is not read. ops'
// SamplerStep is this update on tensors with the coefficients rounded to float32; At is its float64 reference.
type Update struct {
	RA, RM             float64
	Clip               bool
	CX, C0, CE, CZ, CP float64
}

// At evaluates the update for one element in float64.
func (u Update) At(x, e, z, p float64) float64 {
	v := 0.0
	if u.CX != 0 {
		v += u.CX * x
	}
	if u.C0 != 0 {
		x0 := u.RA*x - u.RM*e
		if u.Clip {
			x0 = math.Max(-1, math.Min(1, x0))
		}
		v += u.C0 * x0
	}
	if u.CE != 0 {
		v += u.CE * e
	}
	if u.CZ != 0 {
		v += u.CZ * z
	}
	if u.CP != 0 {
		v += u.CP * p
	}
	return v
}

// DDIMUpdate is the DDIM step from t to tPrev (Song et al. 2021, eq. 12) as diffusers' DDIMScheduler takes it by
// default (use_clipped_model_output=False): x0^ is clipped when clipX0, but the direction term keeps the network's
// eps^,
//
//	x_prev = sqrt(abar_prev) clip(x0^) + sqrt(1 - abar_prev - sigma^2) eps^ + sigma z,   sigma = DDIMSigma(t, tPrev, eta).
//
// Without clipping it equals DDIMStepAt. 1 - abar_prev - sigma^2 is clamped at 0 against rounding.
func (s *Schedule) DDIMUpdate(t, tPrev int, eta float64, clipX0 bool) Update {
	abPrev := s.AlphaBarAt(tPrev)
	sigma := s.DDIMSigma(t, tPrev, eta)
	return Update{RA: s.SqrtRecipAlphaBar[t], RM: s.SqrtRecipM1AlphaBar[t], Clip: clipX0,
		C0: math.Sqrt(abPrev), CE: math.Sqrt(max(0, 1-abPrev-sigma*sigma)), CZ: sigma}
}
