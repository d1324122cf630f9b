package model

import (
	"testing"

	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/cpu"
)

// BenchmarkUNetTrainStep times one training step of the U-Net on the float32 CPU
// backend: zero the gradients, forward, MSE loss and its gradient, backward. It
// reports images/s and GFLOP/s, counting a step as 3 × ForwardFLOPs (backward costs
// about twice the forward: the data and the weight gradients of every product), and
// allocs/op of the steady state (the first step, which makes the batch's views and
// grows the backend's scratch, runs before the timer).
//
// Napkin maths: celeba32 is 4.10 GFLOP per image forward, 12.3 GFLOP per image and
// step, 787 GFLOP per step of 64; at the ~50–100 GFLOP/s two AVX2 cores sustain in
// SGEMM, that is 8–16 s per step, i.e. 4–8 images/s.
//
//	go test ./model/ -run '^$' -bench UNetTrainStep -benchtime 3x
func BenchmarkUNetTrainStep(b *testing.B) {
	celeba := loadConfig(b, "celeba32.toml")
	tiny := loadConfig(b, "tiny.toml")
	for _, bc := range []struct {
		name  string
		cfg   config.Model
		in    int
		size  int
		batch int
	}{
		{"celeba32/b64", celeba.Model, celeba.Data.Channels, celeba.Data.ImageSize, 64},
		{"tiny16/b16", tiny.Model, tiny.Data.Channels, tiny.Data.ImageSize, 16},
	} {
		b.Run(bc.name, func(b *testing.B) {
			be := cpu.New()
			u, step := trainStep(b, be, be, bc.cfg, bc.in, bc.size, bc.batch)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				step()
			}
			sec := b.Elapsed().Seconds()
			b.ReportMetric(float64(b.N*bc.batch)/sec, "images/s")
			b.ReportMetric(3*float64(u.ForwardFLOPs(bc.batch))*float64(b.N)/sec/1e9, "GFLOP/s")
		})
	}
}
