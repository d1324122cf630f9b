package diffusers

import (
	"fmt"

	"github.com/ddpmgo/ddpm/config"
)

// Scheduler is what a DDPMScheduler scheduler_config.json says, in this trainer's terms: the forward process
// ([diffusion]) and the DDPM reverse step's variance and clipping (sample.variance, sample.clip).
type Scheduler struct {
	Diffusion config.Diffusion
	Variance  string // "beta" (fixed_large) or "posterior" (fixed_small)
	Clip      bool
}

// Schedule names: this trainer's [diffusion] schedule ↔ DDPMScheduler's beta_schedule. diffusers' "linear" is
// torch.linspace(beta_start, beta_end, T) (package diffusion computes it in float64, diffusers in float32);
// "squaredcos_cap_v2" is betas_for_alpha_bar with the cosine ᾱ of Nichol & Dhariwal and max_beta 0.999, which is
// diffusion.Cosine (s = 0.008, the same clip).
var (
	toBetaSchedule   = map[string]string{"linear": "linear", "cosine": "squaredcos_cap_v2"}
	fromBetaSchedule = map[string]string{"linear": "linear", "squaredcos_cap_v2": "cosine"}
	// sample.variance ↔ variance_type: σ² = β_t is "fixed_large", σ² = β̃_t is "fixed_small" (DDPMScheduler's
	// _get_variance; its clamp of β̃_t at 1e-20 only matters at t = 0, where neither adds noise).
	toVarianceType   = map[string]string{"beta": "fixed_large", "posterior": "fixed_small"}
	fromVarianceType = map[string]string{"fixed_large": "beta", "fixed_small": "posterior"}
)

// EncodeScheduler writes the scheduler_config.json of a DDPMScheduler for the forward process d and the DDPM step of
// s (variance, clip): every argument of DDPMScheduler.__init__, with diffusers' defaults for what this trainer does
// not use (no thresholding, clip range 1, "leading" spacing, no offset, no zero-SNR rescaling).
func EncodeScheduler(d config.Diffusion, s config.Sample) ([]byte, error) {
	bs, ok := toBetaSchedule[d.Schedule]
	if !ok {
		return nil, fmt.Errorf("diffusers: diffusion.schedule %q has no DDPMScheduler beta_schedule", d.Schedule)
	}
	vt, ok := toVarianceType[s.Variance]
	if !ok {
		return nil, fmt.Errorf("diffusers: sample.variance %q has no DDPMScheduler variance_type", s.Variance)
	}
	if d.Prediction != "epsilon" {
		return nil, fmt.Errorf("diffusers: diffusion.prediction %q: only epsilon is written", d.Prediction)
	}
	return encode(map[string]any{
		"_class_name":                "DDPMScheduler",
		"_diffusers_version":         Version,
		"num_train_timesteps":        d.Timesteps,
		"beta_start":                 pyFloat(d.BetaStart),
		"beta_end":                   pyFloat(d.BetaEnd),
		"beta_schedule":              bs,
		"trained_betas":              nil,
		"variance_type":              vt,
		"clip_sample":                s.Clip,
		"prediction_type":            "epsilon",
		"thresholding":               false,
		"dynamic_thresholding_ratio": pyFloat(0.995),
		"clip_sample_range":          pyFloat(1.0),
		"sample_max_value":           pyFloat(1.0),
		"timestep_spacing":           "leading",
		"steps_offset":               0,
		"rescale_betas_zero_snr":     false,
	})
}

const schedulerKeys = "num_train_timesteps, beta_start, beta_end, beta_schedule, trained_betas, variance_type, " +
	"clip_sample, prediction_type, thresholding, dynamic_thresholding_ratio, clip_sample_range, sample_max_value, " +
	"timestep_spacing, steps_offset, rescale_betas_zero_snr, predict_epsilon (legacy)"

// ParseScheduler reads a DDPMScheduler scheduler_config.json; missing keys take DDPMScheduler's defaults. Supported:
// beta_schedule "linear" and "squaredcos_cap_v2", variance_type "fixed_small" and "fixed_large", prediction_type
// "epsilon", either clip_sample with clip_sample_range 1, no thresholding, no trained_betas, steps_offset 0, no
// zero-SNR rescaling; timestep_spacing "leading", "linspace" or "trailing" (they agree when sampling takes all T
// steps, as bin/sample's DDPM does). Anything else is refused naming the key.
func ParseScheduler(file string, data []byte) (Scheduler, error) {
	o, err := decodeObject(file, data)
	if err != nil {
		return Scheduler{}, err
	}
	if _, err := o.str("_class_name", "DDPMScheduler", "DDPMScheduler"); err != nil {
		return Scheduler{}, err
	}
	var s Scheduler
	d := &s.Diffusion
	if d.Timesteps, err = o.integer("num_train_timesteps", 1000, "an integer ≥ 2", func(i int) bool { return i >= 2 }); err != nil {
		return Scheduler{}, err
	}
	bs, err := o.str("beta_schedule", "linear", "linear", "squaredcos_cap_v2")
	if err != nil {
		return Scheduler{}, err
	}
	d.Schedule = fromBetaSchedule[bs]
	if d.BetaStart, err = o.number("beta_start", jsonFloat(0.0001), "a number in (0, 1)", func(f float64) bool { return f > 0 && f < 1 }); err != nil {
		return Scheduler{}, err
	}
	if d.BetaEnd, err = o.number("beta_end", jsonFloat(0.02), fmt.Sprintf("a number in (beta_start = %g, 1)", d.BetaStart),
		func(f float64) bool { return f > d.BetaStart && f < 1 }); err != nil {
		return Scheduler{}, err
	}
	if err = o.null("trained_betas", "betas from beta_schedule"); err != nil {
		return Scheduler{}, err
	}
	vt, err := o.str("variance_type", "fixed_small", "fixed_small", "fixed_large")
	if err != nil {
		return Scheduler{}, err
	}
	s.Variance = fromVarianceType[vt]
	if s.Clip, err = o.boolean("clip_sample", true); err != nil {
		return Scheduler{}, err
	}
	if d.Prediction, err = o.str("prediction_type", "epsilon", "epsilon"); err != nil {
		return Scheduler{}, err
	}
	if pe, err := o.boolean("predict_epsilon", true); err != nil || !pe { // diffusers 0.5–0.10's prediction_type
		return Scheduler{}, o.refuse("predict_epsilon", o.m["predict_epsilon"], "true (or leave it out)")
	}
	if th, err := o.boolean("thresholding", false); err != nil || th {
		return Scheduler{}, o.refuse("thresholding", o.m["thresholding"], "false")
	}
	any01 := func(float64) bool { return true } // read only with thresholding, which is off
	if _, err = o.number("dynamic_thresholding_ratio", jsonFloat(0.995), "a number", any01); err != nil {
		return Scheduler{}, err
	}
	if _, err = o.number("sample_max_value", jsonFloat(1), "a number", any01); err != nil {
		return Scheduler{}, err
	}
	if _, err = o.number("clip_sample_range", jsonFloat(1), "1 (x̂0 clipped to [−1, 1])", func(f float64) bool { return f == 1 }); err != nil {
		return Scheduler{}, err
	}
	if _, err = o.str("timestep_spacing", "leading", "leading", "linspace", "trailing"); err != nil {
		return Scheduler{}, err
	}
	if _, err = o.integer("steps_offset", 0, "0", func(i int) bool { return i == 0 }); err != nil {
		return Scheduler{}, err
	}
	if rz, err := o.boolean("rescale_betas_zero_snr", false); err != nil || rz {
		return Scheduler{}, o.refuse("rescale_betas_zero_snr", o.m["rescale_betas_zero_snr"], "false")
	}
	if err := o.unknown(schedulerKeys); err != nil {
		return Scheduler{}, err
	}
	return s, nil
}
