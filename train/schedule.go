package train

import "math"

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

// ClipScale is the factor that clips a gradient of global L2 norm `norm` to at most maxNorm, as
// torch.nn.utils.clip_grad_norm_: min(1, maxNorm/(norm + 1e-6)); maxNorm = 0 turns clipping off.
func ClipScale(maxNorm, norm float64) float64 {
	if maxNorm <= 0 {
		return 1
	}
	return math.Min(1, maxNorm/(norm+1e-6))
}
