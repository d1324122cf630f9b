package model

import (
	"math/rand/v2"
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
			u, err := New(be, bc.cfg, bc.in, bc.size, bc.batch)
			if err != nil {
				b.Fatal(err)
			}
			u.Init(1)
			u.SetTrain(true, 1, 0)
			n := bc.batch * bc.in * bc.size * bc.size
			r := rand.New(rand.NewPCG(3, 4))
			xs, ys := make([]float32, n), make([]float32, n)
			for i := range xs {
				xs[i], ys[i] = float32(r.NormFloat64()), float32(r.NormFloat64())
			}
			ts := make([]float32, bc.batch)
			for i := range ts {
				ts[i] = float32(r.IntN(1000))
			}
			x, t, y := upload(be, xs), upload(be, ts), upload(be, ys)
			loss, dout := be.Alloc(1), be.Alloc(n)
			step := func() {
				u.ZeroGrads()
				out := u.Forward(x, t, bc.batch)
				be.MSE(out, y, loss)
				be.Fill(dout, 0)
				be.MSEBackward(1, out, y, dout)
				u.Backward(dout)
			}
			step()
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
