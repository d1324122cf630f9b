package train

import (
	"context"
	"math"
	"os"
	"testing"

	"go.uber.org/zap"

	"github.com/ddpmgo/ddpm/backend"
	"github.com/ddpmgo/ddpm/checkpoint"
	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/configs"
	"github.com/ddpmgo/ddpm/data"
	"github.com/ddpmgo/ddpm/diffusion"
	"github.com/ddpmgo/ddpm/model"
	"github.com/ddpmgo/ddpm/ops"
	"github.com/ddpmgo/ddpm/rng"
	"github.com/ddpmgo/ddpm/sampler"
)

// The step parity of the GPU backend (on the emulator in the default build, TestEmuStepParityTiny; on the GPU with
// -tags cuda, TestCUDAStepParityTiny) against the CPU backend: configs/tiny.toml (with flips on, so that the device
// flip is exercised, and a token end-of-run sample), two optimizer steps from the same seed.
//
// Tolerances, and why:
//   - losses and gradient norms of metrics.jsonl: relative 1e-3 (the bound). Step 1's loss is computed
//     from identical inputs (batch, t and ε are bit-identical by construction) through a network whose float32
//     sums are ordered differently on the two backends: a relative error of ~1e-6 is expected. Step 2 follows one
//     AdamW update, which the next point bounds.
//   - parameters: each AdamW step moves a weight by at most about lr·(1 + weight decay) (|m̂/(√v̂+ε)| ≤ 1 for
//     bias-corrected moments of a constant-sign gradient, and ≈ 1 in the first step), so two steps can move two
//     runs apart by at most 2·2·lr elementwise whatever rounding does (a gradient near zero can change sign); that
//     bound is checked for every weight. For the whole vector, the normalized error of the update p_2 − p_0 must be
//     below 1e-3: the gradients agree to ~1e-6 relative (as the moments m and v show, checked at 1e-3 too), so the
//     updates agree to far better than that unless some kernel is wrong (measured on the emulator: ~5e-5).
//   - the DDIM η = 0 sample (3 steps, 2 images, the same x_T and EMA weights): normalized error 1e-4. Each step is a
//     forward pass (~1e-6 relative differences) and an affine DDIM update; clipping of x̂0 is continuous
//     (measured on the emulator: ~1e-7).
const (
	parityLossTol   = 1e-3
	parityUpdateTol = 1e-3
	paritySampleTol = 1e-4
)

// parityConfig is configs/tiny.toml for two steps, logging each, into dir.
func parityConfig(t *testing.T, dir string) config.Config {
	t.Helper()
	src, err := configs.Files.ReadFile("tiny.toml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("tiny.toml", src, []string{"train.max_steps=2", "train.log_every=1",
		"train.checkpoint_every=0", "data.flip=true", "sample.count=1", "sample.steps=1"})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Run.Dir = dir
	return cfg
}

// parityData is the data of tiny.toml (Fashion-MNIST at 16×16) when it is installed, else 512 synthetic 16×16
// blobs (the comparison is between backends; any images do).
func parityData(t *testing.T, cfg config.Config) data.Dataset {
	t.Helper()
	if _, err := os.Stat(cfg.Data.Path); err == nil {
		ds, err := openDataset(cfg.Data, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		return ds
	}
	t.Logf("%s is not installed: synthetic 16×16 images instead", cfg.Data.Path)
	return syntheticTiny(512)
}

// syntheticTiny is n 1×16×16 images of smooth random blobs.
func syntheticTiny(n int) *data.Images {
	m := &data.Images{C: 1, H: 16, W: 16, Pix: make([]uint8, n*256)}
	for k := 0; k < n; k++ {
		cx, cy := 3+10*rng.Uniform(98, 1, uint64(2*k)), 3+10*rng.Uniform(98, 1, uint64(2*k+1))
		for y := 0; y < 16; y++ {
			for x := 0; x < 16; x++ {
				d := (float32(x)-cx)*(float32(x)-cx) + (float32(y)-cy)*(float32(y)-cy)
				m.Pix[k*256+y*16+x] = uint8(255 * math.Exp(-float64(d)/8))
			}
		}
	}
	return m
}

func relErr(a, b float64) float64 { return math.Abs(a-b) / math.Max(math.Abs(b), 1e-30) }

// normErr64 is ‖got − want‖₂ / max(‖want‖₂, 1e-30).
func normErr64(got, want []float32) float64 {
	var num, den float64
	for i := range want {
		d := float64(got[i]) - float64(want[i])
		num += d * d
		den += float64(want[i]) * float64(want[i])
	}
	return math.Sqrt(num) / math.Max(math.Sqrt(den), 1e-30)
}

// stepParity runs the comparison on device (cuda or emu): the CPU reference run first (a fraction of a second), then
// two subtests that share it, "step" (the device's training run against the CPU's) and "ddim" (a sample from the
// CPU-trained EMA weights on both backends). On the emulator, which runs one launch stream on about one core, the
// two are independent and run in parallel, each on a backend of its own.
func stepParity(t *testing.T, device string) {
	cpuDir := t.TempDir()
	cfg := parityConfig(t, cpuDir)
	ds := parityData(t, cfg)
	open := func(t *testing.T, dev string) ops.Backend {
		t.Helper()
		be, closeBe, err := backend.Open(dev, config.Device{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { closeBe() })
		return be
	}
	runOn := func(t *testing.T, dev, dir string) Result {
		t.Helper()
		c := cfg
		c.Run.Dir = dir
		res, err := Run(context.Background(), c, Options{Backend: open(t, dev), Dataset: ds})
		if err != nil {
			t.Fatalf("%s: %v", dev, err)
		}
		return res
	}
	resCPU := runOn(t, "cpu", cpuDir)
	mc := readMetrics(t, cpuDir)
	table := tinyTableFor(t, cfg)
	sc, err := checkpoint.Read(resCPU.Checkpoint, table)
	if err != nil {
		t.Fatal(err)
	}
	parallel := func(t *testing.T) {
		if device == "emu" {
			t.Parallel()
		}
	}

	t.Run("step", func(t *testing.T) {
		parallel(t)
		devDir := t.TempDir()
		resDev := runOn(t, device, devDir)
		md := readMetrics(t, devDir)
		if len(mc) != 2 || len(md) != 2 {
			t.Fatalf("metrics lines: cpu %d, %s %d; want 2 each", len(mc), device, len(md))
		}
		for i := range mc {
			if e := relErr(md[i].Loss, mc[i].Loss); !(e <= parityLossTol) {
				t.Errorf("step %d loss: %s %.7g, cpu %.7g: relative error %.3g > %g", i+1, device, md[i].Loss, mc[i].Loss, e, parityLossTol)
			} else {
				t.Logf("step %d loss: %s %.7g, cpu %.7g (relative error %.2g)", i+1, device, md[i].Loss, mc[i].Loss, e)
			}
			if e := relErr(md[i].GradNorm, mc[i].GradNorm); !(e <= parityLossTol) {
				t.Errorf("step %d gradient norm: %s %.7g, cpu %.7g: relative error %.3g > %g", i+1, device, md[i].GradNorm, mc[i].GradNorm, e, parityLossTol)
			}
		}

		sd, err := checkpoint.Read(resDev.Checkpoint, table)
		if err != nil {
			t.Fatal(err)
		}
		if sc.Step != 2 || sd.Step != 2 || sc.AdamStep != sd.AdamStep || sc.Data != sd.Data {
			t.Fatalf("counters: cpu %d/%d/%+v, %s %d/%d/%+v", sc.Step, sc.AdamStep, sc.Data, device, sd.Step, sd.AdamStep, sd.Data)
		}
		// The initial weights, from the same seed on the host: the update of each run is p − p0.
		hostBe := open(t, "cpu")
		u, err := model.New(hostBe, cfg.Model, cfg.Data.Channels, cfg.Data.ImageSize, 1)
		if err != nil {
			t.Fatal(err)
		}
		u.Init(cfg.Train.Seed)
		p0 := make([]float32, u.NumParams())
		hostBe.Download(p0, u.Params())
		upd := func(p []float32) []float32 {
			d := make([]float32, len(p))
			for i := range p {
				d[i] = p[i] - p0[i]
			}
			return d
		}
		lr := cfg.Train.LR
		bound := 4 * lr * (1 + cfg.Train.WeightDecay)
		var worst float64
		for i := range sc.Params {
			worst = math.Max(worst, math.Abs(float64(sd.Params[i])-float64(sc.Params[i])))
		}
		if !(worst <= bound) {
			t.Errorf("parameters: largest difference %.3g > 2 steps × 2·lr·(1+wd) = %.3g", worst, bound)
		}
		if e := normErr64(upd(sd.Params), upd(sc.Params)); !(e <= parityUpdateTol) {
			t.Errorf("parameter update p2 − p0: normalized error %.3g > %g", e, parityUpdateTol)
		} else {
			t.Logf("parameter update: normalized error %.3g (largest parameter difference %.3g, bound %.3g)", e, worst, bound)
		}
		if e := normErr64(upd(sd.EMA), upd(sc.EMA)); !(e <= parityUpdateTol) {
			t.Errorf("EMA update: normalized error %.3g > %g", e, parityUpdateTol)
		}
		for _, m := range []struct {
			name      string
			got, want []float32
			tol       float64
		}{{"AdamW m", sd.AdamM, sc.AdamM, parityLossTol}, {"AdamW v", sd.AdamV, sc.AdamV, parityLossTol}} {
			// The moments are sums of (scaled) gradients and squared gradients: as close as the gradients are.
			if e := normErr64(m.got, m.want); !(e <= m.tol) {
				t.Errorf("%s: normalized error %.3g > %g", m.name, e, m.tol)
			} else {
				t.Logf("%s: normalized error %.3g", m.name, e)
			}
		}
	})

	t.Run("ddim", func(t *testing.T) {
		parallel(t)
		// DDIM η = 0 from the same x_T, the same (CPU-trained) EMA weights on both backends.
		const n, steps = 2, 3 // more than one image and more than one step: the cost is the emulator's
		host, err := diffusion.New(cfg.Diffusion.Schedule, cfg.Diffusion.Timesteps, cfg.Diffusion.BetaStart, cfg.Diffusion.BetaEnd)
		if err != nil {
			t.Fatal(err)
		}
		D := cfg.Data.Channels * cfg.Data.ImageSize * cfg.Data.ImageSize
		xT := make([]float32, n*D)
		rng.FillNormal(xT, 77, rng.StreamSampler, 0)
		sample := func(be ops.Backend) []float32 {
			un, err := model.New(be, cfg.Model, cfg.Data.Channels, cfg.Data.ImageSize, n)
			if err != nil {
				t.Fatal(err)
			}
			be.Upload(un.Params(), sc.EMA)
			un.SetTrain(false, 0, 0)
			sp, err := sampler.New(be, host, sampler.Options{Sampler: "ddim", Steps: steps, Eta: 0, Clip: true, Seed: 5}, n, D)
			if err != nil {
				t.Fatal(err)
			}
			out := make([]float32, n*D)
			if err := sp.Sample(context.Background(), un, n, xT, out, nil); err != nil {
				t.Fatal(err)
			}
			return out
		}
		if e := normErr64(sample(open(t, device)), sample(open(t, "cpu"))); !(e <= paritySampleTol) {
			t.Errorf("DDIM η=0 sample: normalized error %.3g > %g", e, paritySampleTol)
		} else {
			t.Logf("DDIM η=0 sample (%d images, %d steps): normalized error %.3g", n, steps, e)
		}
	})
}

// tinyTableFor is the parameter table of cfg's model.
func tinyTableFor(t *testing.T, cfg config.Config) []model.Param {
	t.Helper()
	be, _, err := backend.Open("cpu", config.Device{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	u, err := model.New(be, cfg.Model, cfg.Data.Channels, cfg.Data.ImageSize, 1)
	if err != nil {
		t.Fatal(err)
	}
	return u.Table()
}
