package model

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/cpu"
	"github.com/ddpmgo/ddpm/ops"
)

// BenchmarkUNetPrecisionAB times training steps (zero the gradients, forward, MSE and its gradient, backward) of
// the same U-Net at fp32 and at bf16 on the CPU, interleaved one by one in one process, so that the load of a shared
// machine drifts alike on both: the one comparison of the two precisions that holds on a busy machine (separate
// processes minutes apart differed by 2× on the same config). Each iteration is one step at each precision, in
// alternating order; it
// reports both sides' ms/step and images/s and bf16's speed relative to fp32. Needs AVX512-BF16 or AMX (skips,
// saying so, without).
//
//	go test ./model/ -run '^$' -bench 'UNetPrecisionAB/fashion32' -benchtime 30x
//	go test ./model/ -run '^$' -bench 'UNetPrecisionAB/celeba32' -benchtime 6x
func BenchmarkUNetPrecisionAB(b *testing.B) {
	for _, bc := range []struct {
		name, file string
		batch      int
	}{
		{"fashion32/b32", "fashion32.toml", 32},
		{"celeba32/b64", "celeba32.toml", 64},
	} {
		b.Run(bc.name, func(b *testing.B) {
			cfg := loadConfig(b, bc.file)
			var steps [2]func()
			for k, p := range []ops.Precision{ops.FP32, ops.BF16} {
				be := bf16Bench(b, p)
				_, steps[k] = trainStep(b, be, be, cfg.Model, cfg.Data.Channels, cfg.Data.ImageSize, bc.batch)
			}
			d := interleave(b, steps)
			for k, name := range []string{"fp32", "bf16"} {
				b.ReportMetric(1e3*d[k].Seconds()/float64(b.N), name+"-ms/step")
				b.ReportMetric(float64(bc.batch*b.N)/d[k].Seconds(), name+"-img/s")
			}
			b.ReportMetric(d[0].Seconds()/d[1].Seconds(), "bf16/fp32-speed")
		})
	}
}

// BenchmarkUNetKeptAB is BenchmarkUNetPrecisionAB for the kept convolution inputs: at bf16, the celeba32 step with
// the inputs kept as NHWC bf16 (ops.ConvInputKeeper) and with every input saved as float32 (the backend without the
// capability: hideKeeper), interleaved in one process.
//
//	go test ./model/ -run '^$' -bench UNetKeptAB -benchtime 10x
func BenchmarkUNetKeptAB(b *testing.B) {
	be := bf16Bench(b, ops.BF16)
	cfg := loadConfig(b, "celeba32.toml")
	var steps [2]func()
	for k, mb := range []ops.Backend{be, hideKeeper{be}} {
		_, steps[k] = trainStep(b, be, mb, cfg.Model, cfg.Data.Channels, cfg.Data.ImageSize, 64)
	}
	d := interleave(b, steps)
	for k, name := range []string{"kept", "float32"} {
		b.ReportMetric(1e3*d[k].Seconds()/float64(b.N), name+"-ms/step")
	}
	b.ReportMetric(d[1].Seconds()/d[0].Seconds(), "kept/float32-speed")
}

// bf16Bench is a CPU backend at precision p; it skips where the CPU cannot run bf16.
func bf16Bench(b *testing.B, p ops.Precision) *cpu.Backend[float32] {
	be := cpu.New()
	if err := be.SetPrecision(p); err != nil {
		if strings.Contains(err.Error(), "avx512_bf16") {
			b.Skipf("this CPU cannot run bf16: %v", err)
		}
		b.Fatal(err)
	}
	return be
}

// trainStep returns the U-Net of cfg for C×S×S images on mb (be, or a wrapper of it) and one training step of it
// (zero the gradients, forward, MSE and its gradient, backward; no optimizer) at batch B on random data; it runs
// the step once, so that the batch's views, plans and scratch exist before the timer.
func trainStep(b *testing.B, be *cpu.Backend[float32], mb ops.Backend, cfg config.Model, C, S, B int) (*UNet, func()) {
	u, err := New(mb, cfg, C, S, B)
	if err != nil {
		b.Fatal(err)
	}
	u.Init(1)
	u.SetTrain(true, 1, 0)
	n := B * C * S * S
	r := rand.New(rand.NewPCG(3, 4))
	xs, ys, ts := make([]float32, n), make([]float32, n), make([]float32, B)
	for i := range xs {
		xs[i], ys[i] = float32(r.NormFloat64()), float32(r.NormFloat64())
	}
	for i := range ts {
		ts[i] = float32(r.IntN(1000))
	}
	x, t, y := upload(be, xs), upload(be, ts), upload(be, ys)
	loss, dout := be.Alloc(1), be.Alloc(n)
	step := func() {
		u.ZeroGrads()
		out := u.Forward(x, t, B)
		be.MSE(out, y, loss)
		be.Fill(dout, 0)
		be.MSEBackward(1, out, y, dout)
		u.Backward(dout)
	}
	step()
	return u, step
}

// interleave runs the two steps b.N times each, one after the other, and returns each one's total time. Which side
// goes first alternates: in one process the step after the other ran ~10% slower whichever it was (libgomp's and
// the Go pool's threads settling), and a fixed order put that on one side.
func interleave(b *testing.B, steps [2]func()) [2]time.Duration {
	var d [2]time.Duration
	i := 0
	b.ResetTimer()
	for b.Loop() {
		for j := range steps {
			k := (i + j) % 2
			t0 := time.Now()
			steps[k]()
			d[k] += time.Since(t0)
		}
		i++
	}
	return d
}
