package train

import (
	"math"
	"testing"

	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/ops"
)

func TestLR(t *testing.T) {
	cases := []struct {
		warmup, k int
		want      float64
	}{{0, 1, 1e-3}, {100, 1, 1e-5}, {100, 50, 5e-4}, {100, 100, 1e-3}, {100, 5000, 1e-3}, {1, 1, 1e-3}}
	for _, c := range cases {
		if got := LR(1e-3, c.warmup, c.k); math.Abs(got-c.want) > 1e-15 {
			t.Errorf("LR(warmup %d, step %d) = %g want %g", c.warmup, c.k, got, c.want)
		}
	}
}

func TestEMADecay(t *testing.T) {
	// (1+s)/(10+s) for s = 0, 1, 8: 0.1, 2/11, 0.5; capped by the configured decay.
	for k, want := range map[int]float64{1: 0.1, 2: 2.0 / 11, 9: 0.5, 1000000: 0.999} {
		if got := EMADecay(0.999, true, k); math.Abs(got-want) > 1e-12 {
			t.Errorf("EMADecay(step %d) = %g want %g", k, got, want)
		}
	}
	if got := EMADecay(0.9999, false, 1); got != 0.9999 {
		t.Errorf("without warm-up: %g", got)
	}
}

// TestSettings: the values handed to the step controller are the formulas above and torch's bias corrections, in
// float32 as the update uses them.
func TestSettings(t *testing.T) {
	tc := config.Train{LR: 1e-3, WarmupSteps: 100, AdamBeta1: 0.9, AdamBeta2: 0.999, WeightDecay: 0.01, EMADecay: 0.999, EMAWarmup: true}
	for _, k := range []int{1, 2, 50, 100, 1000} {
		s := Settings(tc, k)
		lr := LR(tc.LR, tc.WarmupSteps, k)
		want := ops.StepSettings{LR: float32(lr), Decay: float32(lr) * float32(0.01),
			RC1: float32(1 / (1 - math.Pow(float64(float32(0.9)), float64(k)))), RC2: float32(1 / (1 - math.Pow(float64(float32(0.999)), float64(k)))),
			EMADecay: float32(EMADecay(0.999, true, k))}
		if s != want {
			t.Errorf("Settings(step %d) = %+v, want %+v", k, s, want)
		}
	}
	// float32(0.9) and float32(0.999) are off by ~2.4e-8 and ~1e-8: 1/(1−β) moves by 2.4e-7 and 1.3e-5 relative.
	if s := Settings(tc, 1); math.Abs(float64(s.RC1)/10-1) > 1e-6 || math.Abs(float64(s.RC2)/1000-1) > 1e-4 {
		t.Errorf("first update's bias corrections %v, %v; want about 1/(1−0.9) = 10 and 1/(1−0.999) = 1000", s.RC1, s.RC2)
	}
}
