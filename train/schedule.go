package train

import (
	"math"

	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/ops"
)

// The schedule of the optimizer, in one place: the learning rate, the bias corrections and the EMA decay of each
// update are formed here on the host and handed to the step controller (ops.StepControl) as values.

// LR is the learning rate of optimizer step k (1-based): a linear warm-up from 0 over warmup steps, then constant,
//
//	lr_k = base · min(1, k / warmup)      (warmup = 0: lr_k = base)
//
// as diffusers' get_constant_schedule_with_warmup evaluated after k−1 scheduler steps, shifted by one so that the
// first update is not taken with a rate of exactly 0.
func LR(base float64, warmup, k int) float64 {
	if warmup <= 0 || k >= warmup {
		return base
	}
	return base * float64(k) / float64(warmup)
}

// EMADecay is the decay of the k-th EMA update (1-based). With warm-up it is diffusers' EMAModel.get_decay,
//
//	decay_k = min(decay, (1 + s)/(10 + s)),  s = k − 1,
//
// so the average follows the weights closely at first (0.1, 0.18, 0.25, …) instead of remembering the random
// initialisation for ~1/(1−decay) steps; without warm-up it is decay.
func EMADecay(decay float64, warmup bool, k int) float64 {
	if !warmup {
		return decay
	}
	s := float64(max(k-1, 0))
	return math.Min(decay, (1+s)/(10+s))
}

// Settings are the values of AdamW update k (1-based) and of the EMA update after it: LR, LR·weight decay, the bias
// corrections 1/(1−β1^k) and 1/(1−β2^k) (formed in float64 from the float32 β that the update uses), EMADecay.
func Settings(tc config.Train, k int) ops.StepSettings {
	lr := LR(tc.LR, tc.WarmupSteps, k)
	b1, b2 := float64(float32(tc.AdamBeta1)), float64(float32(tc.AdamBeta2))
	return ops.StepSettings{
		LR:       float32(lr),
		Decay:    float32(lr) * float32(tc.WeightDecay),
		RC1:      float32(1 / (1 - math.Pow(b1, float64(k)))),
		RC2:      float32(1 / (1 - math.Pow(b2, float64(k)))),
		EMADecay: float32(EMADecay(tc.EMADecay, tc.EMAWarmup, k)),
	}
}

// windowSize is the most steps between two reads of the step controller: the loop reads at every log step.
func windowSize(tc config.Train) int { return max(tc.LogEvery, 1) }

// schedule is the settings of the next window's updates: AdamW updates AdamStep+1, AdamStep+2, … (a skipped step
// takes no update, so the update after it gets the settings it would have had).
func (tr *trainer) schedule() []ops.StepSettings {
	for j := range tr.next {
		tr.next[j] = Settings(tr.cfg.Train, tr.st.AdamStep+1+j)
	}
	return tr.next
}
