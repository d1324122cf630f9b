package diffusers

import (
	"bytes"
	"encoding/json"
	"os"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/model"
)

// unetKeySet is every argument of diffusers' UNet2DModel.__init__ (diffusers 0.2x, src/diffusers/models/unets/
// unet_2d.py) plus the two bookkeeping keys ConfigMixin adds: what save_pretrained writes.
var unetKeySet = []string{"_class_name", "_diffusers_version", "act_fn", "add_attention", "attention_head_dim",
	"attn_norm_num_groups", "block_out_channels", "center_input_sample", "class_embed_type", "down_block_types",
	"downsample_padding", "downsample_type", "dropout", "flip_sin_to_cos", "freq_shift", "in_channels",
	"layers_per_block", "mid_block_scale_factor", "norm_eps", "norm_num_groups", "num_class_embeds",
	"num_train_timesteps", "out_channels", "resnet_time_scale_shift", "sample_size", "time_embedding_type",
	"up_block_types", "upsample_type"}

// schedulerKeySet is every argument of DDPMScheduler.__init__ (diffusers 0.2x) plus the bookkeeping keys.
var schedulerKeySet = []string{"_class_name", "_diffusers_version", "beta_end", "beta_schedule", "beta_start",
	"clip_sample", "clip_sample_range", "dynamic_thresholding_ratio", "num_train_timesteps", "prediction_type",
	"rescale_betas_zero_snr", "sample_max_value", "steps_offset", "thresholding", "timestep_spacing",
	"trained_betas", "variance_type"}

func keysOf(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return m
}

func sortedKeys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// testModels are configs that exercise every mapped option.
func testModels() []struct {
	name     string
	m        config.Model
	in, size int
} {
	base := config.Default().Model
	with := func(f func(*config.Model)) config.Model {
		m := cloneModel(base)
		f(&m)
		return m
	}
	return []struct {
		name     string
		m        config.Model
		in, size int
	}{
		{"default", base, 1, 32},
		{"celeba-like attention at 16", with(func(m *config.Model) { m.AttentionResolutions = []int{16} }), 3, 32},
		{"ddpm-cifar10 options", with(func(m *config.Model) {
			m.BlockChannels = []int{32, 64, 64, 64}
			m.AttentionResolutions = []int{16}
			m.AttentionHeadDim = 0
			m.FlipSinToCos, m.FreqShift, m.DownsamplePadding, m.NormEps = false, 1, 0, 1e-6
		}), 3, 32},
		{"asymmetric attention, no mid attention, dropout, one level", with(func(m *config.Model) {
			m.BlockChannels = []int{16}
			m.NormGroups = 8
			m.DownAttentionResolutions = []int{8}
			m.MidAttention = false
			m.Dropout = 0.1
			m.LayersPerBlock = 1
		}), 1, 8},
		{"up-only attention, fractional shift", with(func(m *config.Model) {
			m.BlockChannels = []int{16, 32}
			m.NormGroups = 4
			m.UpAttentionResolutions = []int{8, 4}
			m.DownAttentionResolutions = []int{}
			m.AttentionHeadDim = 4
			m.FreqShift = 0.5
			m.LayersPerBlock = 3
		}), 3, 8},
	}
}

// TestUNetConfigRoundTrip: EncodeUNet writes every key UNet2DModel defines, and ParseUNet gives back the very model.
func TestUNetConfigRoundTrip(t *testing.T) {
	for _, tc := range testModels() {
		t.Run(tc.name, func(t *testing.T) {
			b, err := EncodeUNet(tc.m, tc.in, tc.size)
			if err != nil {
				t.Fatal(err)
			}
			if got := sortedKeys(keysOf(t, b)); !slices.Equal(got, unetKeySet) {
				t.Errorf("keys %v\nwant %v", got, unetKeySet)
			}
			u, err := ParseUNet("config.json", b)
			if err != nil {
				t.Fatalf("%v\n%s", err, b)
			}
			want := cloneModel(tc.m)
			sortDesc := func(s []int) { sort.Sort(sort.Reverse(sort.IntSlice(s))) }
			sortDesc(want.AttentionResolutions)
			sortDesc(want.DownAttentionResolutions)
			sortDesc(want.UpAttentionResolutions)
			if !reflect.DeepEqual(u.Model, want) || u.InChannels != tc.in || u.SampleSize != tc.size {
				t.Errorf("round trip:\n got %+v in %d size %d\nwant %+v in %d size %d", u.Model, u.InChannels, u.SampleSize, want, tc.in, tc.size)
			}
		})
	}
}

// TestUNetConfigValues pins the values written for one model against what diffusers needs to build it: the Attn
// block variants at the configured resolution in down order and up order, null head dim for one head, and diffusers'
// fixed choices.
func TestUNetConfigValues(t *testing.T) {
	m := cloneModel(config.Default().Model)
	m.BlockChannels = []int{64, 128, 256}
	m.AttentionResolutions = []int{16}
	m.DownAttentionResolutions = []int{8}
	m.AttentionHeadDim = 0
	m.FlipSinToCos, m.FreqShift, m.DownsamplePadding = false, 1, 0
	b, err := EncodeUNet(m, 3, 32)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]json.RawMessage
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"_class_name":             `"UNet2DModel"`,
		"sample_size":             `32`,
		"in_channels":             `3`,
		"out_channels":            `3`,
		"down_block_types":        `["DownBlock2D","AttnDownBlock2D","AttnDownBlock2D"]`,
		"up_block_types":          `["UpBlock2D","AttnUpBlock2D","UpBlock2D"]`,
		"block_out_channels":      `[64,128,256]`,
		"attention_head_dim":      `null`,
		"flip_sin_to_cos":         `false`,
		"freq_shift":              `1`,
		"downsample_padding":      `0`,
		"norm_eps":                `1e-05`,
		"dropout":                 `0.0`,
		"mid_block_scale_factor":  `1.0`,
		"norm_num_groups":         `32`,
		"add_attention":           `true`,
		"time_embedding_type":     `"positional"`,
		"act_fn":                  `"silu"`,
		"resnet_time_scale_shift": `"default"`,
		"center_input_sample":     `false`,
		"class_embed_type":        `null`,
	}
	for k, w := range want {
		var c bytes.Buffer
		if err := json.Compact(&c, got[k]); err != nil || c.String() != w {
			t.Errorf("%s = %s, want %s (as Python's json writes it)", k, got[k], w)
		}
	}
	if !strings.HasSuffix(string(b), "}\n") || !strings.Contains(string(b), "\n  \"act_fn\": \"silu\",\n") {
		t.Errorf("not laid out as save_config (sorted keys, 2-space indent, final newline):\n%s", b)
	}
}

// TestDDPMCifar10Config reads a config.json laid out as google/ddpm-cifar10-32's (an early-diffusers file: fewer
// keys, so the missing ones take diffusers' defaults): every non-default option of this task at once. The model it
// builds has 35,746,307 parameters, the count scripts/torch_parity.py's PyTorch model gives for the same file
// (TestTorchParityFromConfig's fixtures are built the same way) and the 35.7 M of Ho et al.'s CIFAR10 model.
func TestDDPMCifar10Config(t *testing.T) {
	b, err := os.ReadFile("testdata/ddpm-cifar10-32.config.json")
	if err != nil {
		t.Fatal(err)
	}
	u, err := ParseUNet("ddpm-cifar10-32.config.json", b)
	if err != nil {
		t.Fatal(err)
	}
	want := config.Model{BlockChannels: []int{128, 256, 256, 256}, LayersPerBlock: 2, MidAttention: true,
		AttentionResolutions: []int{16}, DownAttentionResolutions: []int{}, UpAttentionResolutions: []int{},
		AttentionHeadDim: 0, NormGroups: 32, NormEps: 1e-6, FlipSinToCos: false, FreqShift: 1, DownsamplePadding: 0}
	if !reflect.DeepEqual(u.Model, want) || u.InChannels != 3 || u.SampleSize != 32 {
		t.Fatalf("got %+v in %d size %d\nwant %+v", u.Model, u.InChannels, u.SampleSize, want)
	}
	if _, n, _ := model.Summary(u.Model, 3, 32, 1); n != 35_746_307 {
		t.Errorf("%d parameters, want 35,746,307", n)
	}
}

// TestUNetRefusals: one case per rejected key; each error names the key, the value and what is supported.
func TestUNetRefusals(t *testing.T) {
	good, err := EncodeUNet(config.Default().Model, 3, 32)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key   string
		value string // JSON
		want  []string
	}{
		{"_class_name", `"UNet2DConditionModel"`, []string{"UNet2DConditionModel", `"UNet2DModel"`}},
		{"sample_size", `null`, []string{"sample_size = null", "positive integer"}},
		{"sample_size", `[32, 64]`, []string{"sample_size = [32,64]", "square"}},
		{"in_channels", `4`, []string{"in_channels = 4", "1 or 3"}},
		{"out_channels", `6`, []string{"out_channels = 6", "same as in_channels"}},
		{"center_input_sample", `true`, []string{"center_input_sample = true", "false"}},
		{"time_embedding_type", `"fourier"`, []string{`time_embedding_type = "fourier"`, `"positional"`}},
		{"freq_shift", `32`, []string{"freq_shift = 32", "< block_out_channels[0]/2 = 32"}},
		{"flip_sin_to_cos", `"yes"`, []string{`flip_sin_to_cos = "yes"`, "true or false"}},
		{"down_block_types", `["DownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]`, []string{"down_block_types", `"CrossAttnDownBlock2D"`, `"AttnDownBlock2D"`}},
		{"down_block_types", `["DownBlock2D", "DownBlock2D"]`, []string{"down_block_types (2)", "same length"}},
		{"up_block_types", `["UpBlock2D", "SkipUpBlock2D", "UpBlock2D"]`, []string{"up_block_types", `"SkipUpBlock2D"`, `"AttnUpBlock2D"`}},
		{"mid_block_type", `"UNetMidBlock2DCrossAttn"`, []string{`mid_block_type = "UNetMidBlock2DCrossAttn"`, `"UNetMidBlock2D"`}},
		{"block_out_channels", `[64, 0, 256]`, []string{"block_out_channels = [64,0,256]", "positive widths"}},
		{"layers_per_block", `0`, []string{"layers_per_block = 0", "≥ 1"}},
		{"mid_block_scale_factor", `1.414`, []string{"mid_block_scale_factor = 1.414", "supported: 1"}},
		{"downsample_padding", `2`, []string{"downsample_padding = 2", "0 or 1"}},
		{"downsample_type", `"resnet"`, []string{`downsample_type = "resnet"`, `"conv"`}},
		{"upsample_type", `"resnet"`, []string{`upsample_type = "resnet"`, `"conv"`}},
		{"dropout", `1`, []string{"dropout = 1", "0 ≤ dropout < 1"}},
		{"act_fn", `"gelu"`, []string{`act_fn = "gelu"`, `"silu", "swish"`}},
		{"attention_head_dim", `0`, []string{"attention_head_dim = 0", "null (one head per block) or a positive integer"}},
		{"attention_head_dim", `48`, []string{"attention_head_dim 48 does not divide"}},
		{"norm_num_groups", `null`, []string{"norm_num_groups = null", "dividing every block width"}},
		{"norm_num_groups", `48`, []string{"norm_num_groups = 48", "dividing every block width"}},
		{"attn_norm_num_groups", `16`, []string{"attn_norm_num_groups = 16", "null, or norm_num_groups (32)"}},
		{"norm_eps", `0`, []string{"norm_eps = 0", "> 0"}},
		{"resnet_time_scale_shift", `"scale_shift"`, []string{`resnet_time_scale_shift = "scale_shift"`, `"default"`}},
		{"add_attention", `1`, []string{"add_attention = 1", "true or false"}},
		{"class_embed_type", `"timestep"`, []string{`class_embed_type = "timestep"`, "null (no class embedding)"}},
		{"num_class_embeds", `10`, []string{"num_class_embeds = 10", "null (no class embedding)"}},
		{"num_train_timesteps", `-1`, []string{"num_train_timesteps = -1", "null or a positive integer"}},
		{"resnet_groups", `32`, []string{`unknown key "resnet_groups"`, "act_fn"}},
	} {
		t.Run(tc.key+"="+tc.value, func(t *testing.T) {
			var m map[string]json.RawMessage
			if err := json.Unmarshal(good, &m); err != nil {
				t.Fatal(err)
			}
			m[tc.key] = json.RawMessage(tc.value)
			b, _ := json.Marshal(m)
			_, err := ParseUNet("unet/config.json", b)
			if err == nil {
				t.Fatalf("accepted %s = %s", tc.key, tc.value)
			}
			for _, w := range append(tc.want, "unet/config.json") {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestUNetDefaultsForMissingKeys: a config.json that sets almost nothing gets UNet2DModel's defaults (the four-level
// (224, 448, 672, 896) model with attention below the first level, head dim 8, 32 groups, eps 1e-5, cos first).
func TestUNetDefaultsForMissingKeys(t *testing.T) {
	u, err := ParseUNet("config.json", []byte(`{"sample_size": 64}`))
	if err != nil {
		t.Fatal(err)
	}
	want := config.Model{BlockChannels: []int{224, 448, 672, 896}, LayersPerBlock: 2, MidAttention: true,
		AttentionResolutions: []int{32, 16, 8}, DownAttentionResolutions: []int{}, UpAttentionResolutions: []int{},
		AttentionHeadDim: 8, NormGroups: 32, NormEps: 1e-5, FlipSinToCos: true, DownsamplePadding: 1}
	if !reflect.DeepEqual(u.Model, want) || u.InChannels != 3 || u.SampleSize != 64 {
		t.Fatalf("got %+v in %d\nwant %+v", u.Model, u.InChannels, want)
	}
}

// TestSchedulerRoundTrip: EncodeScheduler writes every DDPMScheduler key; ParseScheduler gives back the forward
// process, the variance and the clip flag, for both schedules and both variances.
func TestSchedulerRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		d        config.Diffusion
		variance string
		clip     bool
		bs, vt   string
	}{
		{config.Diffusion{Timesteps: 1000, Schedule: "linear", BetaStart: 1e-4, BetaEnd: 0.02, Prediction: "epsilon"}, "beta", true, "linear", "fixed_large"},
		{config.Diffusion{Timesteps: 400, Schedule: "cosine", BetaStart: 1e-4, BetaEnd: 0.02, Prediction: "epsilon"}, "posterior", false, "squaredcos_cap_v2", "fixed_small"},
		{config.Diffusion{Timesteps: 50, Schedule: "linear", BetaStart: 3e-4, BetaEnd: 0.05, Prediction: "epsilon"}, "posterior", true, "linear", "fixed_small"},
	} {
		b, err := EncodeScheduler(tc.d, config.Sample{Variance: tc.variance, Clip: tc.clip})
		if err != nil {
			t.Fatal(err)
		}
		m := keysOf(t, b)
		if got := sortedKeys(m); !slices.Equal(got, schedulerKeySet) {
			t.Errorf("keys %v\nwant %v", got, schedulerKeySet)
		}
		if m["beta_schedule"] != tc.bs || m["variance_type"] != tc.vt || m["_class_name"] != "DDPMScheduler" ||
			m["prediction_type"] != "epsilon" || m["clip_sample"] != tc.clip || m["num_train_timesteps"] != float64(tc.d.Timesteps) {
			t.Errorf("values: %s", b)
		}
		s, err := ParseScheduler("scheduler_config.json", b)
		if err != nil {
			t.Fatal(err)
		}
		if s.Diffusion != tc.d || s.Variance != tc.variance || s.Clip != tc.clip {
			t.Errorf("round trip: got %+v, want %+v %s %v", s, tc.d, tc.variance, tc.clip)
		}
	}
}

// TestSchedulerRefusals: one case per rejected key.
func TestSchedulerRefusals(t *testing.T) {
	good, err := EncodeScheduler(config.Default().Diffusion, config.Default().Sample)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ key, value, want string }{
		{"_class_name", `"DDIMScheduler"`, `"DDPMScheduler"`},
		{"num_train_timesteps", `1`, "≥ 2"},
		{"beta_schedule", `"scaled_linear"`, `"linear", "squaredcos_cap_v2"`},
		{"beta_start", `0`, "(0, 1)"},
		{"beta_end", `0.00001`, "(beta_start = 0.0001, 1)"},
		{"trained_betas", `[0.1, 0.2]`, "null"},
		{"variance_type", `"learned_range"`, `"fixed_small", "fixed_large"`},
		{"clip_sample", `null`, "true or false"},
		{"prediction_type", `"v_prediction"`, `"epsilon"`},
		{"predict_epsilon", `false`, "true"},
		{"thresholding", `true`, "false"},
		{"dynamic_thresholding_ratio", `"x"`, "a number"},
		{"sample_max_value", `"x"`, "a number"},
		{"clip_sample_range", `2`, "1 (x̂0 clipped"},
		{"timestep_spacing", `"karras"`, `"leading", "linspace", "trailing"`},
		{"steps_offset", `1`, "supported: 0"},
		{"rescale_betas_zero_snr", `true`, "false"},
		{"variance_clip", `1`, `unknown key "variance_clip"`},
	} {
		t.Run(tc.key, func(t *testing.T) {
			var m map[string]json.RawMessage
			if err := json.Unmarshal(good, &m); err != nil {
				t.Fatal(err)
			}
			m[tc.key] = json.RawMessage(tc.value)
			b, _ := json.Marshal(m)
			_, err := ParseScheduler("scheduler/scheduler_config.json", b)
			if err == nil {
				t.Fatalf("accepted %s = %s", tc.key, tc.value)
			}
			for _, w := range []string{tc.key, tc.want, "scheduler/scheduler_config.json"} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestNotJSON: the readers refuse what is not one JSON object.
func TestNotJSON(t *testing.T) {
	for _, in := range []string{``, `null`, `[1]`, `{"sample_size": 32} {}`, `{"sample_size": 32`} {
		if _, err := ParseUNet("c.json", []byte(in)); err == nil {
			t.Errorf("ParseUNet accepted %q", in)
		}
		if _, err := ParseScheduler("s.json", []byte(in)); err == nil {
			t.Errorf("ParseScheduler accepted %q", in)
		}
	}
}
