package train

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/ddpmgo/ddpm/checkpoint"
	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/cpu"
	"github.com/ddpmgo/ddpm/diffusers"
)

// TestRunExportsAPipeline: a finished run leaves pipeline/, a DDPMPipeline folder whose configs give back the run's
// model and schedule and whose weights are the final EMA weights (those of unet_ema.safetensors), with the final
// sample grid and the loss plot beside them.
func TestRunExportsAPipeline(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir, "train.max_steps=4", "model.flip_sin_to_cos=false", "model.freq_shift=1",
		"model.downsample_padding=0", "model.down_attention_resolutions=[4]", "model.attention_head_dim=0",
		"sample.variance=\"posterior\"")
	res := mustRun(t, cfg, synthetic(16), false)
	pipe := filepath.Join(dir, PipelineDir)
	for _, f := range []string{"model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
		"scheduler/scheduler_config.json", "samples.png", "loss.png"} {
		if _, err := os.Stat(filepath.Join(pipe, f)); err != nil {
			t.Errorf("pipeline folder lacks %s", f)
		}
	}
	f, err := diffusers.Open(pipe)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(f.UNet.Model, cfg.Model) || f.UNet.InChannels != cfg.Data.Channels || f.UNet.SampleSize != cfg.Data.ImageSize {
		t.Errorf("exported model %+v, run's %+v", f.UNet.Model, cfg.Model)
	}
	if f.Scheduler == nil || f.Scheduler.Diffusion != cfg.Diffusion || f.Scheduler.Variance != "posterior" || f.Scheduler.Clip != cfg.Sample.Clip {
		t.Errorf("exported scheduler %+v, run's %+v", f.Scheduler, cfg.Diffusion)
	}
	table := tinyTable(t, cfg)
	w, meta, err := f.Weights(table)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := checkpoint.Read(res.Checkpoint, table)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(w, ck.EMA) || meta["step"] != "4" || meta["weights"] != "ema" {
		t.Errorf("pipeline weights are not the final EMA (metadata %v)", meta)
	}
	grid, _ := os.ReadFile(res.Samples)
	if b, _ := os.ReadFile(filepath.Join(pipe, "samples.png")); !slices.Equal(b, grid) {
		t.Errorf("pipeline samples.png is not %s", res.Samples)
	}
}

// TestInitFrom: -init-from takes the folder's model (here another width than the config's) and weights, with the
// EMA starting at them, zero AdamW moments and step 0; the run then trains and checkpoints from step 0, and
// -set values the folder contradicts are refused.
func TestInitFrom(t *testing.T) {
	src := t.TempDir()
	donor := testConfig(t, src, "train.max_steps=3", "model.block_channels=[12, 16]", "model.freq_shift=1",
		"model.flip_sin_to_cos=false", "model.downsample_padding=0", "model.up_attention_resolutions=[8]", "model.attention_head_dim=4")
	mustRun(t, donor, synthetic(16), false)
	folder := filepath.Join(src, PipelineDir)

	dir := t.TempDir()
	cfg := testConfig(t, dir, "train.max_steps=2", "train.lr=1e-4")
	c, f, err := InitConfig(cfg, folder, []string{"train.lr=1e-4"})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.Model, donor.Model) || c.Train.LR != 1e-4 {
		t.Fatalf("config with -init-from: model %+v (want the donor's %+v), lr %g", c.Model, donor.Model, c.Train.LR)
	}
	tr, err := setup(c, Options{Backend: cpu.New(), Dataset: synthetic(16)}, zap.NewNop(), f)
	if err != nil {
		t.Fatal(err)
	}
	want, _, err := f.Weights(tr.table)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range []struct {
		name string
		got  []float32
		want []float32
	}{{"params", cpu.Data[float32](tr.unet.Params()), want}, {"ema", cpu.Data[float32](tr.ema), want},
		{"adam m", cpu.Data[float32](tr.m), make([]float32, len(want))}, {"adam v", cpu.Data[float32](tr.v), make([]float32, len(want))}} {
		if !slices.Equal(b.got, b.want) {
			t.Errorf("%s after -init-from setup differ from the expected", b.name)
		}
	}
	if tr.st.Step != 0 || tr.st.AdamStep != 0 {
		t.Errorf("step %d, adam step %d after -init-from; want 0", tr.st.Step, tr.st.AdamStep)
	}
	tr.close()
	os.RemoveAll(dir)

	res, err := Run(context.Background(), cfg, Options{Backend: cpu.New(), Dataset: synthetic(16), InitFrom: folder, Overrides: []string{"train.lr=1e-4"}})
	if err != nil {
		t.Fatal(err)
	}
	st, err := checkpoint.Read(res.Checkpoint, tr.table)
	if err != nil || st.Step != 2 {
		t.Fatalf("fine-tuned checkpoint: step %v, %v; want 2", st, err)
	}
	saved, _ := os.ReadFile(filepath.Join(dir, ConfigFile))
	back, err := config.Parse("config.toml", saved, nil)
	if err != nil || !reflect.DeepEqual(back.Model, donor.Model) {
		t.Errorf("run directory's config.toml does not hold the folder's model: %v %+v", err, back.Model)
	}

	_, err = Run(context.Background(), testConfig(t, t.TempDir(), "model.norm_eps=1e-3"), Options{Backend: cpu.New(),
		Dataset: synthetic(16), InitFrom: folder, Overrides: []string{"model.norm_eps=1e-3"}})
	if err == nil || !strings.Contains(err.Error(), "-set model.norm_eps=1e-3 contradicts") {
		t.Errorf("contradicting -set: %v", err)
	}
}
