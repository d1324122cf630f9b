package config

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
)

// Validate reports every invalid value at once, each saying what is wrong and what
// is allowed.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{key}, args...)...))
	}

	d := c.Data
	if !slices.Contains([]string{"fashion-mnist", "folder", "packed"}, d.Source) {
		bad("data.source", "unknown source %q; allowed: fashion-mnist, folder, packed", d.Source)
	}
	if d.Path == "" {
		bad("data.path", "is empty; set it to the dataset's file or folder")
	}
	if d.Channels != 1 && d.Channels != 3 {
		bad("data.channels", "is %d; allowed: 1 or 3", d.Channels)
	}
	if d.ImageSize < 4 {
		bad("data.image_size", "is %d; must be at least 4", d.ImageSize)
	}
	if d.Crop < 0 {
		bad("data.crop", "is %d; must be ≥ 0 (0 = largest centred square)", d.Crop)
	}
	if d.MaxItems < 0 {
		bad("data.max_items", "is %d; must be ≥ 0 (0 = all)", d.MaxItems)
	}

	m := c.Model
	levels := len(m.BlockChannels)
	if levels == 0 {
		bad("model.block_channels", "is empty; give one width per resolution level, e.g. [64, 128, 256]")
	}
	if m.NormGroups <= 0 {
		bad("model.norm_groups", "is %d; must be > 0", m.NormGroups)
	}
	for i, ch := range m.BlockChannels {
		if ch <= 0 {
			bad("model.block_channels", "entry %d is %d; widths must be > 0", i, ch)
		} else if m.NormGroups > 0 && ch%m.NormGroups != 0 {
			bad("model.block_channels", "entry %d (%d channels) is not divisible by model.norm_groups = %d", i, ch, m.NormGroups)
		}
	}
	if levels > 0 && d.ImageSize > 0 {
		if f := 1 << (levels - 1); d.ImageSize%f != 0 {
			bad("data.image_size", "is %d; with %d levels it must be divisible by 2^(levels−1) = %d", d.ImageSize, levels, f)
		}
	}
	if m.LayersPerBlock < 1 {
		bad("model.layers_per_block", "is %d; must be ≥ 1", m.LayersPerBlock)
	}
	if m.AttentionHeadDim < 0 {
		bad("model.attention_head_dim", "is %d; must be > 0, or 0 for one head per block", m.AttentionHeadDim)
	} else if m.MidAttention && levels > 0 && m.BlockChannels[levels-1]%m.HeadDim(m.BlockChannels[levels-1]) != 0 {
		bad("model.attention_head_dim", "%d does not divide the middle block's %d channels", m.AttentionHeadDim, m.BlockChannels[levels-1])
	}
	for _, list := range []struct {
		key string
		rs  []int
	}{{"model.attention_resolutions", m.AttentionResolutions}, {"model.down_attention_resolutions", m.DownAttentionResolutions},
		{"model.up_attention_resolutions", m.UpAttentionResolutions}} {
		for _, r := range list.rs {
			ok := false
			for l := 0; l < levels; l++ {
				if d.ImageSize>>l == r {
					ok = true
					if ch := m.BlockChannels[l]; m.AttentionHeadDim > 0 && ch%m.AttentionHeadDim != 0 {
						bad("model.attention_head_dim", "%d does not divide the %d channels at resolution %d", m.AttentionHeadDim, ch, r)
					}
				}
			}
			if !ok && levels > 0 {
				var allowed []int
				for l := 0; l < levels; l++ {
					allowed = append(allowed, d.ImageSize>>l)
				}
				bad(list.key, "%d is not a resolution of this U-Net; allowed: %v", r, allowed)
			}
		}
	}
	if !(m.NormEps > 0) {
		bad("model.norm_eps", "is %g; must be > 0", m.NormEps)
	}
	if !(m.Dropout >= 0 && m.Dropout < 1) {
		bad("model.dropout", "is %g; allowed: 0 ≤ dropout < 1", m.Dropout)
	}
	if levels > 0 && m.BlockChannels[0] > 0 {
		if half := m.BlockChannels[0] / 2; half > 0 && !(float64(half)-m.FreqShift > 0) || math.IsInf(m.FreqShift, 0) {
			bad("model.freq_shift", "is %g; must be finite and less than block_channels[0]/2 = %d", m.FreqShift, half)
		}
	}
	if m.DownsamplePadding != 0 && m.DownsamplePadding != 1 {
		bad("model.downsample_padding", "is %d; allowed: 1 (pad 1 all round), 0 (pad bottom and right by 1, as diffusers)", m.DownsamplePadding)
	}

	df := c.Diffusion
	if df.Timesteps < 2 {
		bad("diffusion.timesteps", "is %d; must be ≥ 2", df.Timesteps)
	}
	switch df.Schedule {
	case "linear":
		if !(df.BetaStart > 0) {
			bad("diffusion.beta_start", "is %g; must be > 0", df.BetaStart)
		}
		if !(df.BetaEnd > df.BetaStart) {
			bad("diffusion.beta_end", "is %g; must be greater than beta_start = %g", df.BetaEnd, df.BetaStart)
		}
		if !(df.BetaEnd < 1) {
			bad("diffusion.beta_end", "is %g; must be < 1", df.BetaEnd)
		}
	case "cosine":
	default:
		bad("diffusion.schedule", "unknown schedule %q; allowed: linear, cosine", df.Schedule)
	}
	if df.Prediction != "epsilon" {
		bad("diffusion.prediction", "is %q; allowed: epsilon", df.Prediction)
	}

	t := c.Train
	if t.BatchSize <= 0 {
		bad("train.batch_size", "is %d; must be > 0", t.BatchSize)
	}
	if t.MaxSteps < 0 || t.Epochs < 0 || t.MaxMinutes < 0 {
		bad("train", "max_steps, epochs and max_minutes must be ≥ 0 (0 = no budget of that kind)")
	}
	if t.MaxSteps == 0 && t.Epochs == 0 && t.MaxMinutes == 0 {
		bad("train", "no budget: set at least one of max_steps, epochs, max_minutes")
	}
	if !(t.LR > 0) || math.IsInf(t.LR, 0) {
		bad("train.lr", "is %g; must be > 0", t.LR)
	}
	if t.WarmupSteps < 0 {
		bad("train.warmup_steps", "is %d; must be ≥ 0", t.WarmupSteps)
	}
	if !(t.WeightDecay >= 0) {
		bad("train.weight_decay", "is %g; must be ≥ 0", t.WeightDecay)
	}
	if !(t.AdamBeta1 >= 0 && t.AdamBeta1 < 1) {
		bad("train.adam_beta1", "is %g; allowed: 0 ≤ β1 < 1", t.AdamBeta1)
	}
	if !(t.AdamBeta2 >= 0 && t.AdamBeta2 < 1) {
		bad("train.adam_beta2", "is %g; allowed: 0 ≤ β2 < 1", t.AdamBeta2)
	}
	if !(t.AdamEps > 0) {
		bad("train.adam_eps", "is %g; must be > 0", t.AdamEps)
	}
	if !(t.GradClip >= 0) {
		bad("train.grad_clip", "is %g; must be ≥ 0 (0 = off)", t.GradClip)
	}
	if t.GradAccum < 1 {
		bad("train.grad_accum", "is %d; must be ≥ 1", t.GradAccum)
	}
	if !(t.EMADecay >= 0 && t.EMADecay < 1) {
		bad("train.ema_decay", "is %g; allowed: 0 ≤ decay < 1", t.EMADecay)
	}
	if t.CheckpointEvery < 0 {
		bad("train.checkpoint_every", "is %d; must be ≥ 0 (0 = only at the end)", t.CheckpointEvery)
	}
	if t.KeepCheckpoints < 1 {
		bad("train.keep_checkpoints", "is %d; must be ≥ 1", t.KeepCheckpoints)
	}
	if t.LogEvery < 1 {
		bad("train.log_every", "is %d; must be ≥ 1", t.LogEvery)
	}
	if t.SampleEvery < 0 {
		bad("train.sample_every", "is %d; must be ≥ 0 (0 = only at the end)", t.SampleEvery)
	}
	if !slices.Contains(Precisions, t.Precision) {
		bad("train.precision", "is %q; allowed: fp32, tf32 (GPU tensor cores), bf16 (CPUs with AVX512-BF16 or AMX, GPUs of compute capability 8.0+), auto (bf16 where it runs natively, else fp32)", t.Precision)
	}
	if t.OnWriteError != "stop" && t.OnWriteError != "continue" {
		bad("train.on_write_error", "is %q; allowed: stop, continue", t.OnWriteError)
	}

	s := c.Sample
	if !slices.Contains(Samplers, s.Sampler) {
		bad("sample.sampler", "unknown sampler %q; allowed: %s", s.Sampler, strings.Join(Samplers, ", "))
	}
	if s.Steps < 1 || (df.Timesteps > 0 && s.Steps > df.Timesteps) {
		bad("sample.steps", "is %d; allowed: 1 … diffusion.timesteps (%d)", s.Steps, df.Timesteps)
	}
	if !(s.Eta >= 0 && s.Eta <= 1) {
		bad("sample.eta", "is %g; allowed: 0 ≤ η ≤ 1", s.Eta)
	}
	if s.Count < 1 {
		bad("sample.count", "is %d; must be ≥ 1", s.Count)
	}
	switch s.Variance {
	case "beta", "posterior", "fixed_large", "fixed_small":
	default:
		bad("sample.variance", "is %q; allowed: beta or fixed_large (σ² = β_t), posterior or fixed_small (σ² = β̃_t)", s.Variance)
	}
	switch s.Spacing {
	case SpacingAuto, "leading", "trailing", "linspace":
	case "karras":
		if s.Sampler == "ddpm" || s.Sampler == "ddim" {
			bad("sample.spacing", "is \"karras\", a grid of noise levels for euler, euler_maruyama, heun and dpmpp2m; %s visits "+
				"timesteps: leading, trailing or linspace", s.Sampler)
		}
	default:
		bad("sample.spacing", "is %q; allowed: auto (the sampler's own), leading, trailing, linspace, karras", s.Spacing)
	}
	if s.Sampler == "dpmpp2m" && df.Timesteps > 0 && s.Steps >= df.Timesteps && (s.Spacing == SpacingAuto || s.Spacing == "leading" || s.Spacing == "linspace") {
		bad("sample.steps", "is %d; dpmpp2m with %s spacing takes at most diffusion.timesteps − 1 (%d) steps", s.Steps, s.Spacing, df.Timesteps-1)
	}
	if !(s.Churn >= 0) || math.IsInf(s.Churn, 0) {
		bad("sample.churn", "is %g; allowed: ≥ 0 (0 = deterministic heun)", s.Churn)
	}
	return errors.Join(errs...)
}

// Levels is the number of resolution levels of the U-Net.
func (m Model) Levels() int { return len(m.BlockChannels) }
