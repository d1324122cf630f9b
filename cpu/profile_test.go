package cpu_test

import (
	"math/rand/v2"
	"os"
	"strconv"
	"testing"

	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/configs"
	"github.com/ddpmgo/ddpm/cpu"
	"github.com/ddpmgo/ddpm/model"
	"github.com/ddpmgo/ddpm/ops"
)

// BenchmarkCeleba32StepProfile times full training steps of the celeba32 U-Net on the
// float32 backend (zero grads, forward, MSE and its gradient, backward, AdamW, as the
// trainer's step) and logs the per-op-family time profile of the timed steps. Batch
// DDPM_PROFILE_BATCH (default 64), precision DDPM_PROFILE_PRECISION (default fp32; bf16
// needs AVX512-BF16 or AMX):
//
//	go test ./cpu/ -run '^$' -bench Celeba32StepProfile -benchtime 3x -v
func BenchmarkCeleba32StepProfile(b *testing.B) {
	batch := 64
	if v := os.Getenv("DDPM_PROFILE_BATCH"); v != "" {
		var err error
		if batch, err = strconv.Atoi(v); err != nil {
			b.Fatal(err)
		}
	}
	be := cpu.New()
	if v := os.Getenv("DDPM_PROFILE_PRECISION"); v != "" {
		p, err := ops.ParsePrecision(v)
		if err != nil {
			b.Fatal(err)
		}
		if err := be.SetPrecision(p); err != nil {
			b.Fatal(err)
		}
	}
	u, train := celeba32Step(b, be, batch)
	be.SetProfile(true)
	defer be.SetProfile(false)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		train()
	}
	sec := b.Elapsed().Seconds()
	b.ReportMetric(float64(b.N*batch)/sec, "images/s")
	b.ReportMetric(3*float64(u.ForwardFLOPs(batch))*float64(b.N)/sec/1e9, "GFLOP/s")
	b.Logf("celeba32, batch %d, %s (conv %s), %d steps, wall %.0f ms/step:\n%s", batch, be.Precision(), be.ConvImpl(), b.N, 1e3*sec/float64(b.N), be.Profile().Table(b.N))
}

// TestTrainStepAllocatesNothing: after the first step, a training step of the tiny U-Net
// on the float32 backend (forward, loss, backward, AdamW) allocates nothing: the
// backend's parallel ops go to its persistent worker pool without closures, and its
// scratch only grows on the first step.
func TestTrainStepAllocatesNothing(t *testing.T) {
	src, err := configs.Files.ReadFile("tiny.toml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("tiny.toml", src, nil)
	if err != nil {
		t.Fatal(err)
	}
	be := cpu.New()
	const batch = 4
	in, size := cfg.Data.Channels, cfg.Data.ImageSize
	u, err := model.New(be, cfg.Model, in, size, batch)
	if err != nil {
		t.Fatal(err)
	}
	u.Init(1)
	u.SetTrain(true, 1, 0)
	n := batch * in * size * size
	x, y, t0, loss, dout := be.Alloc(n), be.Alloc(n), be.Alloc(batch), be.Alloc(1), be.Alloc(n)
	be.Fill(x, 0.5)
	be.Fill(y, -0.25)
	be.Fill(t0, 10)
	m, v := be.Alloc(u.NumParams()), be.Alloc(u.NumParams())
	ss := be.Alloc(1)
	step := 0
	train := func() {
		step++
		u.ZeroGrads()
		out := u.Forward(x, t0, batch)
		be.MSE(out, y, loss)
		be.Fill(dout, 0)
		be.MSEBackward(1, out, y, dout)
		u.Backward(dout)
		be.SumSquares(u.Grads(), ss)
		be.AdamWStep(ops.AdamW{LR: 1e-4, Decay: 1e-6, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, RC1: 1, RC2: 1, GradScale: 1},
			u.Params(), u.Grads(), m, v)
	}
	train()
	if a := testing.AllocsPerRun(3, train); a != 0 {
		t.Fatalf("a steady-state training step allocates %v times", a)
	}
}

// celeba32Step is the celeba32 U-Net on be at batch and its full training step (zero grads, forward, MSE and its
// gradient, backward, AdamW, as the trainer's step) on random data, run once so that plans and scratch exist.
func celeba32Step(b *testing.B, be *cpu.Backend[float32], batch int) (*model.UNet, func()) {
	src, err := configs.Files.ReadFile("celeba32.toml")
	if err != nil {
		b.Fatal(err)
	}
	cfg, err := config.Parse("celeba32.toml", src, nil)
	if err != nil {
		b.Fatal(err)
	}
	in, size := cfg.Data.Channels, cfg.Data.ImageSize
	u, err := model.New(be, cfg.Model, in, size, batch)
	if err != nil {
		b.Fatal(err)
	}
	u.Init(1)
	u.SetTrain(true, 1, 0)
	n := batch * in * size * size
	r := rand.New(rand.NewPCG(3, 4))
	host := func(n int, f func() float32) ops.Buf {
		d := make([]float32, n)
		for i := range d {
			d[i] = f()
		}
		buf := be.Alloc(n)
		be.Upload(buf, d)
		return buf
	}
	normal := func() float32 { return float32(r.NormFloat64()) }
	x, y := host(n, normal), host(n, normal)
	t := host(batch, func() float32 { return float32(r.IntN(1000)) })
	loss, dout := be.Alloc(1), be.Alloc(n)
	np := u.NumParams()
	m, v := be.Alloc(np), be.Alloc(np)
	train := func() {
		u.ZeroGrads()
		out := u.Forward(x, t, batch)
		be.MSE(out, y, loss)
		be.Fill(dout, 0)
		be.MSEBackward(1, out, y, dout)
		u.Backward(dout)
		be.AdamWStep(ops.AdamW{LR: 1e-4, Decay: 1e-6, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, RC1: 1, RC2: 1, GradScale: 1},
			u.Params(), u.Grads(), m, v)
	}
	train()
	return u, train
}
