package train

import (
	"math"
	"testing"
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

func TestClipScale(t *testing.T) {
	if got := ClipScale(1, 0.5); got != 1 {
		t.Errorf("small norm clipped: %g", got)
	}
	if got := ClipScale(1, 4); math.Abs(got-1/(4+1e-6)) > 1e-15 {
		t.Errorf("norm 4: %g", got)
	}
	if got := ClipScale(0, 100); got != 1 {
		t.Errorf("clip off: %g", got)
	}
}
