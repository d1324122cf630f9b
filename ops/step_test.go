package ops

import (
	"math"
	"testing"
)

func TestClipFactor(t *testing.T) {
	if got := ClipFactor(1, 0.5); got != 1 {
		t.Errorf("small norm clipped: %g", got)
	}
	if got := ClipFactor(1, 4); math.Abs(got-1/(4+1e-6)) > 1e-15 {
		t.Errorf("norm 4: %g", got)
	}
	if got := ClipFactor(0, 100); got != 1 {
		t.Errorf("clip off: %g", got)
	}
}
