package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

const configsDir = "../configs"

// The reference file must list every key, with exactly the defaults of Default:
// it is the documentation users read.
func TestReferenceListsEveryKeyWithDefaults(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(configsDir, "reference.toml"))
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]map[string]any
	if _, err := toml.Decode(string(src), &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range Keys() {
		sec, key, _ := strings.Cut(k, ".")
		if _, ok := raw[sec][key]; !ok {
			t.Errorf("configs/reference.toml does not document %s", k)
		}
	}
	got := Default()
	if _, err := toml.Decode(string(src), &got); err != nil {
		t.Fatal(err)
	}
	if want := Default(); !reflect.DeepEqual(got, want) {
		t.Errorf("reference.toml values differ from Default():\n got %+v\nwant %+v", got, want)
	}
}

func TestShippedConfigsLoad(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(configsDir, "*.toml"))
	if len(files) < 4 {
		t.Fatalf("expected reference, celeba32, fashion32, tiny; found %v", files)
	}
	for _, f := range files {
		if _, err := Load(f, nil); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// The seed recipe, restated from the issue rather than read back from the file.
func TestCelebA32IsTheSeedRecipe(t *testing.T) {
	c, err := Load(filepath.Join(configsDir, "celeba32.toml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"image_size", c.Data.ImageSize, 32},
		{"channels", c.Data.Channels, 3},
		{"max_items", c.Data.MaxItems, 10000},
		{"batch_size", c.Train.BatchSize, 256},
		{"epochs", c.Train.Epochs, 50},
		{"lr", c.Train.LR, 2e-4},
		{"timesteps", c.Diffusion.Timesteps, 1000},
		{"schedule", c.Diffusion.Schedule, "linear"},
		{"beta_start", c.Diffusion.BetaStart, 1e-4},
		{"beta_end", c.Diffusion.BetaEnd, 0.02},
		{"prediction", c.Diffusion.Prediction, "epsilon"},
		{"block_channels", c.Model.BlockChannels, []int{64, 128, 256}},
		{"layers_per_block", c.Model.LayersPerBlock, 2},
		{"mid_attention", c.Model.MidAttention, true},
		{"run.dir", c.Run.Dir, filepath.Join("runs", "celeba32")},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("%s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}

func TestUnknownKeyNamesKeyAndFile(t *testing.T) {
	_, err := Parse("my.toml", []byte("[train]\nbatch_sise = 3\n"), nil)
	if err == nil {
		t.Fatal("unknown key accepted")
	}
	for _, want := range []string{"my.toml", "train.batch_sise", `did you mean "train.batch_size"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	_, err = Parse("my.toml", []byte("[trian]\nlr = 1\n"), nil)
	if err == nil || !strings.Contains(err.Error(), "trian") {
		t.Errorf("unknown section: %v", err)
	}
}

func TestSetOverrides(t *testing.T) {
	c, err := Parse("x.toml", nil, []string{
		"train.batch_size=64", "data.source=folder", "model.block_channels=[32, 64]",
		"train.lr = 1e-3", `run.dir="out/x"`, "data.flip=true",
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.Train.BatchSize != 64 || c.Data.Source != "folder" || !reflect.DeepEqual(c.Model.BlockChannels, []int{32, 64}) ||
		c.Train.LR != 1e-3 || c.Run.Dir != "out/x" || !c.Data.Flip {
		t.Fatalf("overrides not applied: %+v", c)
	}
	if c.Run.Name != "x" {
		t.Errorf("run.name = %q, want the file's base name", c.Run.Name)
	}
	for _, bad := range []string{"train.nope=1", "batch_size=3", "train.batch_size", "train.batch_size=\"many\""} {
		if _, err := Parse("x.toml", nil, []string{bad}); err == nil {
			t.Errorf("-set %q accepted", bad)
		}
	}
}

func TestInvalidValuesSayWhatIsAllowed(t *testing.T) {
	cases := []struct {
		set  string
		want string
	}{
		{"train.batch_size=0", "train.batch_size: is 0; must be > 0"},
		{"diffusion.beta_end=0.00001", "must be greater than beta_start"},
		{"diffusion.schedule=quadratic", "allowed: linear, cosine"},
		{"data.image_size=30", "divisible by 2^(levels−1) = 4"},
		{"model.norm_groups=24", "not divisible by model.norm_groups = 24"},
		{"data.channels=2", "allowed: 1 or 3"},
		{"sample.sampler=lms", "allowed: ddpm, ddim, euler, euler_maruyama, heun, dpmpp2m"},
		{"sample.spacing=uniform", "allowed: auto (the sampler's own), leading, trailing, linspace, karras"},
		{"sample.spacing=karras", "ddpm visits timesteps"},
		{"sample.churn=-1", "sample.churn: is -1; allowed: ≥ 0"},
		{"sample.variance=large", "allowed: beta or fixed_large"},
		{"train.on_write_error=ignore", "allowed: stop, continue"},
		{"model.attention_resolutions=[7]", "allowed: [32 16 8]"},
		{"train.ema_decay=1.5", "0 ≤ decay < 1"},
		{"model.down_attention_resolutions=[7]", "model.down_attention_resolutions: 7 is not a resolution"},
		{"model.up_attention_resolutions=[5]", "model.up_attention_resolutions: 5 is not a resolution"},
		{"model.attention_head_dim=-1", "or 0 for one head per block"},
		{"model.downsample_padding=2", "allowed: 1 (pad 1 all round), 0"},
		{"model.freq_shift=32", "less than block_channels[0]/2 = 32"},
		{"model.freq_shift=nan", "model.freq_shift: is NaN"},
	}
	for _, c := range cases {
		_, err := Parse("x.toml", nil, []string{c.set})
		if err == nil {
			t.Errorf("%s accepted", c.set)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q lacks %q", c.set, err, c.want)
		}
	}
	// Several problems are reported together.
	_, err := Parse("x.toml", nil, []string{"train.batch_size=-1", "train.lr=0"})
	if err == nil || !strings.Contains(err.Error(), "batch_size") || !strings.Contains(err.Error(), "train.lr") {
		t.Errorf("want both errors, got %v", err)
	}
}

func TestPrintedConfigRoundTrips(t *testing.T) {
	c, err := Load(filepath.Join(configsDir, "celeba32.toml"), []string{"train.seed=42", "model.freq_shift=0.5",
		"model.flip_sin_to_cos=false", "model.downsample_padding=0", "model.down_attention_resolutions=[8]",
		"model.up_attention_resolutions=[16]", "model.attention_head_dim=0"})
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse("printed.toml", []byte(c.TOML()), nil)
	if err != nil {
		t.Fatalf("printed config does not load: %v\n%s", err, c.TOML())
	}
	if !reflect.DeepEqual(back, c) {
		t.Fatalf("round trip differs:\n%+v\n%+v", back, c)
	}
}

// TestSamplerKeys: the new samplers and their keys are accepted where they apply and refused where they do not.
func TestSamplerKeys(t *testing.T) {
	for _, sets := range [][]string{
		{"sample.sampler=ddpm", "sample.steps=50", "sample.variance=fixed_small"},
		{"sample.sampler=ddim", "sample.steps=50", "sample.spacing=trailing", "sample.clipped_eps=false"},
		{"sample.sampler=heun", "sample.steps=18", "sample.spacing=karras", "sample.churn=40"},
		{"sample.sampler=euler_maruyama", "sample.steps=200"},
		{"sample.sampler=dpmpp2m", "sample.steps=999", "sample.spacing=trailing"},
		{"sample.sampler=dpmpp2m", "sample.steps=20"},
	} {
		if _, err := Parse("x.toml", nil, sets); err != nil {
			t.Errorf("%v: %v", sets, err)
		}
	}
	for _, c := range []struct {
		sets []string
		want string
	}{
		{[]string{"sample.sampler=dpmpp2m", "sample.steps=1000"}, "at most diffusion.timesteps − 1 (999)"},
		{[]string{"sample.sampler=ddim", "sample.spacing=karras"}, "ddim visits timesteps"},
		{[]string{"sample.sampler=heun", "sample.steps=1001"}, "allowed: 1 … diffusion.timesteps (1000)"},
	} {
		_, err := Parse("x.toml", nil, c.sets)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error saying %q", c.sets, err, c.want)
		}
	}
}

// TestPrecision: train.precision, and device.tensor_cores as its older spelling of "tf32".
func TestPrecision(t *testing.T) {
	for _, c := range []struct {
		file string
		sets []string
		want string // "" = an error
		msg  string // in the error
	}{
		{"", nil, "fp32", ""},
		{"[train]\nprecision = \"bf16\"\n", nil, "bf16", ""},
		{"", []string{"train.precision=bf16"}, "bf16", ""},
		{"", []string{"train.precision=auto"}, "auto", ""},
		{"[device]\ntensor_cores = true\n", []string{"train.precision=auto"}, "", "conflicts with train.precision = \"auto\""},
		{"", []string{"train.precision=fp16"}, "", "allowed: fp32, tf32"},
		{"[device]\ntensor_cores = true\n", nil, "tf32", ""},
		{"", []string{"device.tensor_cores=true"}, "tf32", ""},
		{"[device]\ntensor_cores = true\n[train]\nprecision = \"tf32\"\n", nil, "tf32", ""},
		{"[device]\ntensor_cores = true\n[train]\nprecision = \"bf16\"\n", nil, "", "conflicts with train.precision = \"bf16\""},
		{"[device]\ntensor_cores = true\n", []string{"train.precision=fp32"}, "", "conflicts with train.precision = \"fp32\""},
		{"[train]\nprecision = \"fp32\"\n", []string{"device.tensor_cores=true"}, "", "conflicts"},
	} {
		cfg, err := Parse("x.toml", []byte(c.file), c.sets)
		switch {
		case c.want == "" && (err == nil || !strings.Contains(err.Error(), c.msg)):
			t.Errorf("%q %v: error %v, want one containing %q", c.file, c.sets, err, c.msg)
		case c.want != "" && err != nil:
			t.Errorf("%q %v: %v", c.file, c.sets, err)
		case c.want != "" && cfg.Train.Precision != c.want:
			t.Errorf("%q %v: precision %q, want %q", c.file, c.sets, cfg.Train.Precision, c.want)
		case c.want != "":
			// The resolved config parses back to itself (a run's config.toml, a checkpoint's metadata).
			again, err := Parse("again.toml", []byte(cfg.TOML()), nil)
			if err != nil || !reflect.DeepEqual(again.Train, cfg.Train) || again.Device != cfg.Device {
				t.Errorf("%q %v: the printed config does not parse back to itself: %v", c.file, c.sets, err)
			}
		}
	}
}
