package diffusers

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/ddpmgo/ddpm/backend"
	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/model"
	"github.com/ddpmgo/ddpm/ops"
	"github.com/ddpmgo/ddpm/safetensors"
)

// tinyConfig is a run config whose model uses every option a config.json can set: sin first, freq_shift 1,
// downsample_padding 0, one head per block, attention in a down block only and in an up block only, no mid
// attention; and a cosine schedule with the posterior variance and no clipping.
func tinyConfig(t testing.TB) config.Config {
	t.Helper()
	c := config.Default()
	c.Data.Channels, c.Data.ImageSize = 3, 8
	c.Model = config.Model{BlockChannels: []int{8, 16}, LayersPerBlock: 1, MidAttention: false,
		AttentionResolutions: []int{}, DownAttentionResolutions: []int{8}, UpAttentionResolutions: []int{4},
		AttentionHeadDim: 0, NormGroups: 4, NormEps: 1e-6, FlipSinToCos: false, FreqShift: 1, DownsamplePadding: 0}
	c.Diffusion = config.Diffusion{Timesteps: 100, Schedule: "cosine", BetaStart: 1e-4, BetaEnd: 0.02, Prediction: "epsilon"}
	c.Sample.Steps, c.Sample.Variance, c.Sample.Clip = 100, "posterior", false
	c.Run.Name, c.Run.Dir, c.Train.MaxSteps = "tiny", "runs/tiny", 1
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

func download(be ops.Backend, b ops.Buf) []float32 {
	h := make([]float32, b.Len())
	be.Download(h, b)
	return h
}

func upload(be ops.Backend, v []float32) ops.Buf {
	b := be.Alloc(len(v))
	be.Upload(b, v)
	return b
}

// writeTiny exports the tiny model with weights drawn by model.Init(seed) and returns the folder and the weights.
func writeTiny(t *testing.T, c config.Config, seed uint64, extras ...Extra) (string, []model.Param, []float32) {
	t.Helper()
	be, closeBe, err := backend.Open("cpu", c.Device, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer closeBe()
	u, err := model.New(be, c.Model, c.Data.Channels, c.Data.ImageSize, 1)
	if err != nil {
		t.Fatal(err)
	}
	u.Init(seed)
	w := download(be, u.Params())
	dir := filepath.Join(t.TempDir(), "pipeline")
	if err := Write(dir, Pipeline{Config: c, Table: u.Table(), Weights: w, Meta: map[string]string{"step": "7", "weights": "ema"}, Extras: extras}); err != nil {
		t.Fatal(err)
	}
	return dir, u.Table(), w
}

// TestExportImportIdenticalOutputs is the round trip: a model exported as a pipeline folder and imported from it
// (config.json alone builds the model, the weights come from the safetensors file) gives bit-identical outputs to
// the model it was exported from, on the CPU backend and on the CUDA kernels (emulated); the two backends agree with
// each other to float32 accuracy.
func TestExportImportIdenticalOutputs(t *testing.T) {
	c := tinyConfig(t)
	const seed, batch = 11, 2
	dir, _, _ := writeTiny(t, c, seed)
	f, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(f.UNet.Model, c.Model) || f.UNet.InChannels != 3 || f.UNet.SampleSize != 8 {
		t.Fatalf("imported model %+v, exported %+v", f.UNet, c.Model)
	}
	if f.Scheduler == nil || f.Scheduler.Diffusion != c.Diffusion || f.Scheduler.Variance != "posterior" || f.Scheduler.Clip {
		t.Fatalf("imported scheduler %+v", f.Scheduler)
	}
	n := batch * 3 * 8 * 8
	x := make([]float32, n)
	for i := range x {
		x[i] = float32((i*37)%17)/8 - 1
	}
	ts := []float32{3, 97}
	outs := map[string][]float32{}
	for _, device := range []string{"cpu", "emu"} {
		t.Run(device, func(t *testing.T) {
			be, closeBe, err := backend.Open(device, c.Device, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer closeBe()
			orig, err := model.New(be, c.Model, 3, 8, batch)
			if err != nil {
				t.Fatal(err)
			}
			orig.Init(seed)
			xb, tb := upload(be, x), upload(be, ts)
			want := download(be, orig.Forward(xb, tb, batch))
			imp, err := f.NewUNet(be, batch)
			if err != nil {
				t.Fatal(err)
			}
			got := download(be, imp.Forward(xb, tb, batch))
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("output[%d]: imported %g, exported %g (want bit-identical)", i, got[i], want[i])
				}
			}
			outs[device] = got
		})
	}
	if a, b := outs["cpu"], outs["emu"]; len(a) == n && len(b) == n {
		var maxAbs, scale float64
		for i := range a {
			maxAbs = max(maxAbs, abs(float64(a[i]-b[i])))
			scale = max(scale, abs(float64(a[i])))
		}
		if maxAbs > 1e-4*scale {
			t.Errorf("cpu and emu outputs differ by %g (scale %g)", maxAbs, scale)
		}
	}
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}

// TestWriteLayout: the folder holds exactly what DDPMPipeline.save_pretrained writes (plus the extras), the
// model_index.json names the pipeline and its two components, and the weights file carries format "pt".
func TestWriteLayout(t *testing.T) {
	c := tinyConfig(t)
	src := filepath.Join(t.TempDir(), "loss.png")
	if err := os.WriteFile(src, []byte("png"), 0o644); err != nil {
		t.Fatal(err)
	}
	dir, table, w := writeTiny(t, c, 3, Extra{Name: "loss.png", Path: src})
	var files []string
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			files = append(files, rel)
		}
		return err
	})
	want := []string{"loss.png", "model_index.json", "scheduler/scheduler_config.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors"}
	if !reflect.DeepEqual(files, want) {
		t.Fatalf("files %v, want %v", files, want)
	}
	var index map[string]any
	b, _ := os.ReadFile(filepath.Join(dir, ModelIndexFile))
	if err := json.Unmarshal(b, &index); err != nil {
		t.Fatal(err)
	}
	if show(index["_class_name"]) != `"DDPMPipeline"` || show(index["unet"]) != `["diffusers","UNet2DModel"]` ||
		show(index["scheduler"]) != `["diffusers","DDPMScheduler"]` || index["_diffusers_version"] != Version {
		t.Errorf("model_index.json: %s", b)
	}
	sf, err := safetensors.ReadFile(filepath.Join(dir, UNetDir, WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	if sf.Metadata["format"] != "pt" || sf.Metadata["step"] != "7" || len(sf.Tensors) != len(table) {
		t.Errorf("weights file: metadata %v, %d tensors (model %d)", sf.Metadata, len(sf.Tensors), len(table))
	}
	for _, p := range table {
		got, ok := sf.Get(p.Name)
		if !ok || !reflect.DeepEqual(got.Data, w[p.Offset:p.Offset+p.Size]) {
			t.Fatalf("tensor %s not written as the model holds it", p.Name)
		}
	}
}

// TestOpenForms: a pipeline folder, its unet folder (the scheduler found beside it), the weights file itself, and a
// bare unet_ema.safetensors next to a config.json without any scheduler are all read, to the same weights.
func TestOpenForms(t *testing.T) {
	c := tinyConfig(t)
	dir, table, w := writeTiny(t, c, 5)
	bare := t.TempDir()
	b, _ := os.ReadFile(filepath.Join(dir, UNetDir, ConfigFile))
	os.WriteFile(filepath.Join(bare, ConfigFile), b, 0o644)
	b, _ = os.ReadFile(filepath.Join(dir, UNetDir, WeightsFile))
	os.WriteFile(filepath.Join(bare, EMAWeightsFile), b, 0o644)
	for _, tc := range []struct {
		path      string
		scheduler bool
	}{
		{dir, true},
		{filepath.Join(dir, UNetDir), true},
		{filepath.Join(dir, UNetDir, WeightsFile), true},
		{bare, false},
		{filepath.Join(bare, EMAWeightsFile), false},
	} {
		f, err := Open(tc.path)
		if err != nil {
			t.Fatalf("%s: %v", tc.path, err)
		}
		if (f.Scheduler != nil) != tc.scheduler {
			t.Errorf("%s: scheduler %+v, want present=%v", tc.path, f.Scheduler, tc.scheduler)
		}
		got, _, err := f.Weights(table)
		if err != nil || !reflect.DeepEqual(got, w) {
			t.Errorf("%s: weights differ (%v)", tc.path, err)
		}
	}
	if _, err := Open(t.TempDir()); err == nil || !strings.Contains(err.Error(), "no ") {
		t.Errorf("empty folder: %v", err)
	}
}

// TestWeightsChecks: the pre-0.14 attention names are taken; a missing tensor, a wrong shape, an extra tensor and a
// model_index.json naming another model class are refused naming the tensor or key.
func TestWeightsChecks(t *testing.T) {
	c := tinyConfig(t)
	dir, table, w := writeTiny(t, c, 5)
	wpath := filepath.Join(dir, UNetDir, WeightsFile)
	rewrite := func(edit func([]safetensors.Tensor) []safetensors.Tensor) {
		t.Helper()
		var ts []safetensors.Tensor
		for _, p := range table {
			ts = append(ts, safetensors.Tensor{Name: p.Name, Shape: p.Shape, Data: w[p.Offset : p.Offset+p.Size]})
		}
		ts = edit(ts)
		fh, err := os.Create(wpath)
		if err != nil {
			t.Fatal(err)
		}
		defer fh.Close()
		if err := safetensors.Write(fh, ts, map[string]string{"format": "pt"}); err != nil {
			t.Fatal(err)
		}
	}
	f, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	rewrite(func(ts []safetensors.Tensor) []safetensors.Tensor {
		for i := range ts {
			for _, l := range legacy {
				ts[i].Name = strings.Replace(ts[i].Name, l.now, l.old, 1)
			}
		}
		return ts
	})
	if got, _, err := f.Weights(table); err != nil || !reflect.DeepEqual(got, w) {
		t.Errorf("legacy attention names: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func([]safetensors.Tensor) []safetensors.Tensor
		want string
	}{
		{"missing", func(ts []safetensors.Tensor) []safetensors.Tensor { return ts[1:] }, `tensor "` + table[0].Name + `" is missing`},
		{"shape", func(ts []safetensors.Tensor) []safetensors.Tensor {
			ts[0].Shape = []int{ts[0].Shape[0] * ts[0].Shape[1], ts[0].Shape[2], ts[0].Shape[3]}
			return ts
		}, `"` + table[0].Name + `" has shape`},
		{"extra", func(ts []safetensors.Tensor) []safetensors.Tensor {
			return append(ts, safetensors.Tensor{Name: "class_embedding.weight", Shape: []int{2}, Data: []float32{1, 2}})
		}, `"class_embedding.weight" is not a parameter`},
	} {
		rewrite(tc.edit)
		if _, _, err := f.Weights(table); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	os.WriteFile(filepath.Join(dir, ModelIndexFile), []byte(`{"_class_name": "DDPMPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}`), 0o644)
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "unet") || !strings.Contains(err.Error(), "UNet2DConditionModel") {
		t.Errorf("model_index.json with another unet class: %v", err)
	}
}

// TestApply: the folder's model and schedule replace the config's; a -set that agrees is fine, one that contradicts
// the folder is an error naming it, the file and the folder's value; ddpm's all-steps sample.steps follows T.
func TestApply(t *testing.T) {
	c := tinyConfig(t)
	dir, _, _ := writeTiny(t, c, 5)
	f, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	base := config.Default()
	base.Run.Name, base.Run.Dir = "x", "runs/x"
	base.Train.LR = 3e-5
	got, err := f.Apply(base, []string{"train.lr=3e-5", "diffusion.timesteps=100", "model.norm_eps=1e-6"})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Model, c.Model) || got.Diffusion != c.Diffusion || got.Data.Channels != 3 || got.Data.ImageSize != 8 ||
		got.Sample.Variance != "posterior" || got.Sample.Clip || got.Sample.Steps != 100 || got.Train.LR != 3e-5 {
		t.Errorf("applied config:\n%s", got.TOML())
	}
	for _, tc := range []struct{ set, want string }{
		{"diffusion.timesteps=1000", "scheduler_config.json, which makes diffusion.timesteps = 100"},
		{"model.block_channels=[8, 32]", "config.json, which makes model.block_channels = [8,16]"},
		{"data.image_size=16", "config.json, which makes data.image_size = 8"},
		{"sample.clip=true", "scheduler_config.json, which makes sample.clip = false"},
	} {
		_, err := f.Apply(base, []string{"train.lr=3e-5", tc.set})
		if err == nil || !strings.Contains(err.Error(), "-set "+tc.set+" contradicts") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("-set %s: %v, want an error containing %q", tc.set, err, tc.want)
		}
	}
}
