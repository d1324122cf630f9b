package cpu

import (
	"math"
	"testing"
)

// TestExp32 sweeps float32 inputs over the whole range and compares with math.Exp.
func TestExp32(t *testing.T) {
	worst := 0.0
	for x := float32(-87.3); x < 88.7; x += 0.00731 {
		got, want := float64(exp32(x)), math.Exp(float64(x))
		if e := math.Abs(got-want) / want; e > worst {
			worst = e
		}
	}
	t.Logf("worst relative error %.3g (float32 epsilon %.3g)", worst, math.Pow(2, -23))
	if worst > 3e-7 {
		t.Errorf("exp32 relative error %.3g > 3e-7", worst)
	}
	for _, c := range []struct{ x, want float32 }{
		{0, 1}, {-200, 0}, {200, float32(math.Inf(1))}, {float32(math.Inf(-1)), 0}, {float32(math.Inf(1)), float32(math.Inf(1))},
	} {
		if got := exp32(c.x); got != c.want {
			t.Errorf("exp32(%g) = %g, want %g", c.x, got, c.want)
		}
	}
	if nan := exp32(float32(math.NaN())); nan == nan {
		t.Errorf("exp32(NaN) = %g", nan)
	}
}

func BenchmarkExp32(b *testing.B) {
	var s float32
	for i := 0; i < b.N; i++ {
		s += exp32(float32(i&1023) * -0.01)
	}
	_ = s
}

func BenchmarkExpFloat64(b *testing.B) {
	var s float64
	for i := 0; i < b.N; i++ {
		s += math.Exp(float64(i&1023) * -0.01)
	}
	_ = s
}

var expSink []float32

func benchExpSlice(b *testing.B, f func(float32) float32) {
	x := make([]float32, 4096)
	for i := range x {
		x[i] = float32(i%200)*0.1 - 10
	}
	y := make([]float32, len(x))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j, v := range x {
			y[j] = v / (1 + f(-v))
		}
	}
	expSink = y
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(x)), "ns/elem")
}

func BenchmarkSiLULoop(b *testing.B) {
	b.Run("exp32", func(b *testing.B) { benchExpSlice(b, exp32) })
	b.Run("math.Exp", func(b *testing.B) {
		benchExpSlice(b, func(v float32) float32 { return float32(math.Exp(float64(v))) })
	})
}
