package train

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/configs"
	"github.com/ddpmgo/ddpm/cpu"
	"github.com/ddpmgo/ddpm/data"
	"github.com/ddpmgo/ddpm/ops"
)

// bf16CPU returns a CPU backend at precision bf16, or skips naming what this CPU lacks.
func bf16CPU(t *testing.T) *cpu.Backend[float32] {
	t.Helper()
	be := cpu.New()
	if err := be.SetPrecision(ops.BF16); err != nil {
		if strings.Contains(err.Error(), "avx512_bf16") {
			t.Skipf("this CPU cannot run bf16 (needs AVX512-BF16 or AMX): %v", err)
		}
		t.Fatal(err)
	}
	return be
}

// TestResumeIsBitIdenticalBF16: N + M steps straight equal N, resume, M, bit for bit, at precision bf16 too.
func TestResumeIsBitIdenticalBF16(t *testing.T) {
	bf16CPU(t)
	ds := synthetic(24)
	runBF16 := func(cfg config.Config, resume bool) Result {
		t.Helper()
		res, err := Run(context.Background(), cfg, Options{Backend: bf16CPU(t), Dataset: ds, Resume: resume})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	sets := []string{"train.checkpoint_every=4", "train.precision=bf16"}
	r1 := runBF16(testConfig(t, t.TempDir(), append(sets, "train.max_steps=8")...), false)
	dir := t.TempDir()
	runBF16(testConfig(t, dir, append(sets, "train.max_steps=4")...), false)
	r2 := runBF16(testConfig(t, dir, append(sets, "train.max_steps=8")...), true)
	sameTensors(t, readTensors(t, r1.Checkpoint), readTensors(t, r2.Checkpoint))
	// And bf16 is not fp32: the same 8 steps at fp32 end elsewhere.
	r3 := mustRun(t, testConfig(t, t.TempDir(), "train.checkpoint_every=4", "train.max_steps=8"), ds, false)
	a, _ := readTensors(t, r1.Checkpoint).Get("conv_in.weight")
	b, _ := readTensors(t, r3.Checkpoint).Get("conv_in.weight")
	same := true
	for i := range a.Data {
		same = same && a.Data[i] == b.Data[i]
	}
	if same {
		t.Error("bf16 and fp32 runs ended with identical weights: bf16 did not take effect")
	}
}

// lossBand* bound the bf16 loss curve of configs/tiny.toml against fp32's from the same seed (the same data, t and
// ε at every step). Measured on an AMD EPYC (avx512_bf16, oneDNN jit_bf16): steps 1–10 within 0.1%, every step
// within 1.1%, every 20-step mean within 0.2% over 200 steps; the bands leave 4–10× room for another CPU's kernels
// (AMX sums in another order) while a bf16 path that lost precision somewhere (an FP32 reduction done in bf16, a
// gradient stored in bf16) moves the curve by more.
const (
	lossBandSteps = 200
	lossBandEarly = 10   // steps 1..lossBandEarly: each step's loss within lossBandStep0 of fp32's
	lossBandStep0 = 0.01 // the weights still nearly equal: bf16's rounding of the matmul inputs alone (~0.3% per op)
	lossBandStep  = 0.05 // every later step: the weights drift apart, each step's loss within 5% of fp32's
	lossBandMean  = 0.01 // the mean loss over each window of 20 steps: within 1% of fp32's
)

// TestTinyLossBandBF16 trains configs/tiny.toml (Fashion-MNIST, 16×16, batch 16) for lossBandSteps steps at fp32 and
// at bf16 from the same seed and compares the loss curves (metrics.jsonl, every step). Both runs see the same
// images, timesteps and noise, so at first the losses differ only by bf16's rounding of the convolution, linear and
// attention inputs (relative ~2^-8 per product, ~0.3% per op); as the weights drift apart, each step's loss is a
// different network's on the same batch, and only its statistics must match: the mean over windows of 20 steps
// within lossBandMean, each step within lossBandStep. Needs AVX512-BF16 or AMX (skips, saying so, without).
func TestTinyLossBandBF16(t *testing.T) {
	if _, err := os.Stat(filepath.Join(data.FashionMNISTDir, "train-images-idx3-ubyte.gz")); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("Fashion-MNIST is not installed at %s: scripts/setup.sh installs dataset-fashion-mnist", data.FashionMNISTDir)
		}
		t.Skipf("Fashion-MNIST is not installed at %s", data.FashionMNISTDir)
	}
	bf := bf16CPU(t)
	src, err := configs.Files.ReadFile("tiny.toml")
	if err != nil {
		t.Fatal(err)
	}
	curve := func(be ops.Backend, precision string) []float64 {
		dir := t.TempDir()
		cfg, err := config.Parse("tiny.toml", src, []string{fmt.Sprintf("train.max_steps=%d", lossBandSteps), "train.log_every=1",
			"train.checkpoint_every=0", "sample.count=1", "sample.steps=1", "train.precision=" + precision, "run.dir=" + dir})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Run(context.Background(), cfg, Options{Backend: be}); err != nil {
			t.Fatal(err)
		}
		var l []float64
		for _, m := range readMetrics(t, dir) {
			l = append(l, m.Loss)
		}
		if len(l) != lossBandSteps {
			t.Fatalf("%s: %d metrics lines, want %d", precision, len(l), lossBandSteps)
		}
		return l
	}
	f32, b16 := curve(cpu.New(), "fp32"), curve(bf, "bf16")
	worst, worstMean := 0.0, 0.0
	for i := range f32 {
		d := math.Abs(b16[i]-f32[i]) / f32[i]
		band := lossBandStep
		if i < lossBandEarly {
			band = lossBandStep0
		}
		if !(d <= band) {
			t.Errorf("step %d: loss %.5f at bf16, %.5f at fp32: relative difference %.3f > %.3f", i+1, b16[i], f32[i], d, band)
		}
		worst = max(worst, d)
	}
	for w := 0; w+20 <= len(f32); w += 20 {
		var a, b float64
		for i := w; i < w+20; i++ {
			a, b = a+f32[i], b+b16[i]
		}
		d := math.Abs(b-a) / a
		if !(d <= lossBandMean) {
			t.Errorf("steps %d–%d: mean loss %.5f at bf16, %.5f at fp32: relative difference %.3f > %.3f", w+1, w+20, b/20, a/20, d, lossBandMean)
		}
		worstMean = max(worstMean, d)
	}
	t.Logf("fp32 loss %.4f → %.4f, bf16 %.4f → %.4f; largest relative difference: per step %.4f, per 20-step mean %.4f",
		f32[0], f32[len(f32)-1], b16[0], b16[len(b16)-1], worst, worstMean)
	for i := 0; i < len(f32); i += 10 {
		t.Logf("step %3d: fp32 %.5f bf16 %.5f", i+1, f32[i], b16[i])
	}
}
