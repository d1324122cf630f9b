// Package config is the trainer's configuration: typed structs decoded strictly from
// TOML, documented defaults, command-line overrides and validation.
//
// configs/reference.toml lists every key with its default and meaning; a test keeps
// that file, Default and the structs in step.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
)

// Config is the whole configuration of a run.
type Config struct {
	Run       Run       `toml:"run"`
	Data      Data      `toml:"data"`
	Model     Model     `toml:"model"`
	Diffusion Diffusion `toml:"diffusion"`
	Train     Train     `toml:"train"`
	Sample    Sample    `toml:"sample"`
	Device    Device    `toml:"device"`
}

// Run names the run and where its files go.
type Run struct {
	Name string `toml:"name"` // default: the config file's base name
	Dir  string `toml:"dir"`  // default: runs/<name>
}

// Data says where images come from and how they are prepared.
type Data struct {
	Source    string `toml:"source"`     // fashion-mnist | folder | packed
	Path      string `toml:"path"`       // IDX dir/file, image folder, or .pack file
	ImageSize int    `toml:"image_size"` // side of the square training images
	Channels  int    `toml:"channels"`   // 1 or 3
	Crop      int    `toml:"crop"`       // folder: centre crop side before resizing; 0 = largest square
	MaxItems  int    `toml:"max_items"`  // 0 = all
	Flip      bool   `toml:"flip"`       // random horizontal flips
	SkipBad   bool   `toml:"skip_bad"`   // folder: skip unreadable images (counted) instead of stopping
}

// Model is the U-Net (diffusers' UNet2DModel with DownBlock2D/UpBlock2D, AttnDownBlock2D/AttnUpBlock2D where
// attention is asked for, UNetMidBlock2D). Package diffusers maps it to and from a UNet2DModel config.json.
type Model struct {
	BlockChannels            []int   `toml:"block_channels"`
	LayersPerBlock           int     `toml:"layers_per_block"`
	MidAttention             bool    `toml:"mid_attention"`
	AttentionResolutions     []int   `toml:"attention_resolutions"`      // resolutions whose down and up blocks get attention
	DownAttentionResolutions []int   `toml:"down_attention_resolutions"` // resolutions whose down block (only) gets attention
	UpAttentionResolutions   []int   `toml:"up_attention_resolutions"`   // resolutions whose up block (only) gets attention
	AttentionHeadDim         int     `toml:"attention_head_dim"`         // 0: one head per block (diffusers' null)
	NormGroups               int     `toml:"norm_groups"`
	NormEps                  float64 `toml:"norm_eps"`
	Dropout                  float64 `toml:"dropout"`
	FlipSinToCos             bool    `toml:"flip_sin_to_cos"`    // time embedding: cos first (true) or sin first
	FreqShift                float64 `toml:"freq_shift"`         // time embedding: f_i = exp(−ln(10⁴)·i/(half − freq_shift))
	DownsamplePadding        int     `toml:"downsample_padding"` // 1: pad 1 all round; 0: pad (0, 1, 0, 1), as diffusers
}

// DownAttention says whether the down block of the given level gets attention for imageSize-pixel images
// (AttnDownBlock2D): its resolution imageSize>>level is in attention_resolutions or down_attention_resolutions.
func (m Model) DownAttention(imageSize, level int) bool {
	r := imageSize >> level
	return slices.Contains(m.AttentionResolutions, r) || slices.Contains(m.DownAttentionResolutions, r)
}

// UpAttention says whether the up block at the given level (the level of its output resolution, imageSize>>level)
// gets attention (AttnUpBlock2D): that resolution is in attention_resolutions or up_attention_resolutions.
func (m Model) UpAttention(imageSize, level int) bool {
	r := imageSize >> level
	return slices.Contains(m.AttentionResolutions, r) || slices.Contains(m.UpAttentionResolutions, r)
}

// HeadDim is the channels per attention head in a block of the given width: attention_head_dim, or the whole width
// (one head) when it is 0, as diffusers' UNet2DModel does for attention_head_dim = null.
func (m Model) HeadDim(channels int) int {
	if m.AttentionHeadDim == 0 {
		return channels
	}
	return m.AttentionHeadDim
}

// Diffusion is the forward process and the prediction target.
type Diffusion struct {
	Timesteps  int     `toml:"timesteps"`
	Schedule   string  `toml:"schedule"` // linear | cosine
	BetaStart  float64 `toml:"beta_start"`
	BetaEnd    float64 `toml:"beta_end"`
	Prediction string  `toml:"prediction"` // epsilon
}

// Train is the optimisation and its budgets.
type Train struct {
	BatchSize       int     `toml:"batch_size"`
	MaxSteps        int     `toml:"max_steps"`   // 0 = no step budget
	Epochs          int     `toml:"epochs"`      // 0 = no epoch budget
	MaxMinutes      float64 `toml:"max_minutes"` // 0 = no time budget
	LR              float64 `toml:"lr"`
	WarmupSteps     int     `toml:"warmup_steps"`
	WeightDecay     float64 `toml:"weight_decay"`
	AdamBeta1       float64 `toml:"adam_beta1"`
	AdamBeta2       float64 `toml:"adam_beta2"`
	AdamEps         float64 `toml:"adam_eps"`
	GradClip        float64 `toml:"grad_clip"` // global norm; 0 = off
	GradAccum       int     `toml:"grad_accum"`
	EMADecay        float64 `toml:"ema_decay"`
	EMAWarmup       bool    `toml:"ema_warmup"`
	CheckpointEvery int     `toml:"checkpoint_every"`
	KeepCheckpoints int     `toml:"keep_checkpoints"`
	LogEvery        int     `toml:"log_every"`
	SampleEvery     int     `toml:"sample_every"` // 0 = only at the end
	SkipNonfinite   bool    `toml:"skip_nonfinite"`
	OnWriteError    string  `toml:"on_write_error"` // stop | continue: after a failed checkpoint, sample, plot or metrics write
	// Precision of the matmul-heavy ops (convolutions, linear layers, attention matmuls), with FP32 master weights,
	// gradients, optimizer, EMA, normalisation, softmax and loss (automatic mixed precision, package ops' Precision):
	// fp32 | tf32 (GPU tensor cores only) | bf16 (CPUs with AVX512-BF16 or AMX; GPUs of compute capability 8.0+) |
	// auto (bf16 where the backend runs it natively, else fp32). device.tensor_cores = true is the older spelling of
	// "tf32".
	Precision string `toml:"precision"`
	Seed      uint64 `toml:"seed"`
}

// Sample configures the sample grids written during and after training and the
// defaults of bin/sample.
type Sample struct {
	Sampler    string  `toml:"sampler"` // ddpm | ddim | euler | euler_maruyama | heun | dpmpp2m
	Steps      int     `toml:"steps"`
	Eta        float64 `toml:"eta"`
	Count      int     `toml:"count"`
	Variance   string  `toml:"variance"`    // beta | posterior (σ² of the DDPM step); fixed_large | fixed_small
	Clip       bool    `toml:"clip"`        // clip x̂0 to [−1, 1]
	Spacing    string  `toml:"spacing"`     // auto | leading | trailing | linspace | karras
	ClippedEps bool    `toml:"clipped_eps"` // ddim with clip: ε̂ recomputed from the clipped x̂0 (false: diffusers' default)
	Churn      float64 `toml:"churn"`       // heun: S_churn (0 = deterministic)
}

// Samplers are the values of sample.sampler (package sampler's Names).
var Samplers = []string{"ddpm", "ddim", "euler", "euler_maruyama", "heun", "dpmpp2m"}

// SpacingAuto is sample.spacing's default: each sampler's own (package sampler's DefaultSpacing).
const SpacingAuto = "auto"

// Device tunes the GPU backend (-device cuda and its emulator, -device emu); the CPU backend ignores it.
type Device struct {
	// TensorCores is the older spelling of train.precision = "tf32" (the convolutions on TF32 tensor cores): Parse
	// sets train.precision to "tf32" when it is true, and refuses it next to another train.precision. The CPU
	// backend ignores it (with a warning), as it always did.
	TensorCores bool `toml:"tensor_cores"`
}

// Precisions are the values of train.precision: package ops' Precisions, and PrecisionAuto.
var Precisions = []string{"fp32", "tf32", "bf16", PrecisionAuto}

// PrecisionAuto is the train.precision that backend.SetPrecision resolves per machine: bf16 where the backend runs it
// natively (a CPU with AVX512-BF16 or AMX), fp32 elsewhere.
const PrecisionAuto = "auto"

// TensorCoresNote is the warning a run logs when its config sets device.tensor_cores.
const TensorCoresNote = `device.tensor_cores = true is the older spelling of train.precision = "tf32"; set that instead`

// Default is the configuration every file is decoded on top of.
func Default() Config {
	return Config{
		Data: Data{
			Source:    "fashion-mnist",
			Path:      "/usr/share/datasets/fashion-mnist",
			ImageSize: 32,
			Channels:  1,
		},
		Model: Model{
			BlockChannels:            []int{64, 128, 256},
			LayersPerBlock:           2,
			MidAttention:             true,
			AttentionResolutions:     []int{},
			DownAttentionResolutions: []int{},
			UpAttentionResolutions:   []int{},
			AttentionHeadDim:         8,
			NormGroups:               32,
			NormEps:                  1e-5,
			FlipSinToCos:             true,
			DownsamplePadding:        1,
		},
		Diffusion: Diffusion{
			Timesteps:  1000,
			Schedule:   "linear",
			BetaStart:  1e-4,
			BetaEnd:    0.02,
			Prediction: "epsilon",
		},
		Train: Train{
			BatchSize:       128,
			Epochs:          1,
			LR:              2e-4,
			WeightDecay:     0.01,
			AdamBeta1:       0.9,
			AdamBeta2:       0.999,
			AdamEps:         1e-8,
			GradClip:        1.0,
			GradAccum:       1,
			EMADecay:        0.9999,
			EMAWarmup:       true,
			CheckpointEvery: 1000,
			KeepCheckpoints: 3,
			LogEvery:        50,
			OnWriteError:    "stop",
			Precision:       "fp32",
		},
		Sample: Sample{
			Sampler:    "ddpm",
			Steps:      1000,
			Count:      64,
			Variance:   "beta",
			Clip:       true,
			Spacing:    SpacingAuto,
			ClippedEps: true,
		},
	}
}

// Load decodes the TOML file at path on top of Default, applies the overrides
// ("section.key=value", value in TOML syntax; a bare word is taken as a string),
// fills derived defaults and validates. name is the file's base name without
// extension; it is used for run.name when the file sets none.
func Load(path string, overrides []string) (Config, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return Parse(path, src, overrides)
}

// Parse is Load over bytes already read; path names the source in errors.
func Parse(path string, src []byte, overrides []string) (Config, error) {
	c := Default()
	precSet, err := decodeStrict(path, string(src), &c)
	if err != nil {
		return Config{}, err
	}
	for _, o := range overrides {
		set, err := c.set(o)
		if err != nil {
			return Config{}, err
		}
		precSet = precSet || set
	}
	if c.Device.TensorCores {
		if precSet && c.Train.Precision != "tf32" {
			return Config{}, fmt.Errorf("config %s: device.tensor_cores = true (the older spelling of train.precision = \"tf32\") "+
				"conflicts with train.precision = %q; keep train.precision and remove device.tensor_cores", path, c.Train.Precision)
		}
		c.Train.Precision = "tf32"
	}
	if c.Run.Name == "" {
		c.Run.Name = strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	}
	if c.Run.Dir == "" {
		c.Run.Dir = filepath.Join("runs", c.Run.Name)
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Set applies one "section.key=value" override.
func (c *Config) Set(kv string) error {
	_, err := c.set(kv)
	return err
}

// set is Set, also saying whether the override sets train.precision.
func (c *Config) set(kv string) (bool, error) {
	key, val, ok := strings.Cut(kv, "=")
	section, field, dotted := strings.Cut(strings.TrimSpace(key), ".")
	if !ok || !dotted || section == "" || field == "" {
		return false, fmt.Errorf("-set %q: want section.key=value, e.g. -set train.batch_size=64", kv)
	}
	val = strings.TrimSpace(val)
	doc := fmt.Sprintf("[%s]\n%s = %s\n", section, field, val)
	var probe map[string]any
	if _, err := toml.Decode(doc, &probe); err != nil {
		// Not a TOML value: take the text as a string (-set data.source=folder).
		doc = fmt.Sprintf("[%s]\n%s = %q\n", section, field, val)
	}
	return decodeStrict("-set "+kv, doc, c)
}

// decodeStrict decodes doc onto c, refusing unknown keys; it says whether doc sets train.precision.
func decodeStrict(origin, doc string, c *Config) (precision bool, err error) {
	md, err := toml.Decode(doc, c)
	if err != nil {
		var perr toml.ParseError
		if errors.As(err, &perr) {
			return false, fmt.Errorf("config %s: %s", origin, perr.ErrorWithPosition())
		}
		return false, fmt.Errorf("config %s: %w", origin, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		var keys []string
		for _, k := range und {
			keys = append(keys, k.String())
		}
		sort.Strings(keys)
		msg := fmt.Sprintf("config %s: unknown key %q", origin, keys[0])
		if s := suggest(keys[0]); s != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", s)
		}
		if len(keys) > 1 {
			msg += fmt.Sprintf(" and %d more: %s", len(keys)-1, strings.Join(keys[1:], ", "))
		}
		return false, errors.New(msg + "; configs/reference.toml lists every key")
	}
	return md.IsDefined("train", "precision"), nil
}

// Keys lists every "section.key" the configuration accepts, in declaration order.
func Keys() []string {
	var keys []string
	ct := reflect.TypeOf(Config{})
	for i := 0; i < ct.NumField(); i++ {
		sf := ct.Field(i)
		st := sf.Type
		for j := 0; j < st.NumField(); j++ {
			keys = append(keys, sf.Tag.Get("toml")+"."+st.Field(j).Tag.Get("toml"))
		}
	}
	return keys
}

// suggest returns the known key closest to an unknown one, if it is close.
func suggest(unknown string) string {
	best, bestD := "", 4
	for _, k := range Keys() {
		if d := editDistance(unknown, k); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// TOML renders the resolved configuration as TOML (for -print-config and the run
// directory's config.toml).
func (c Config) TOML() string {
	var b bytes.Buffer
	if err := toml.NewEncoder(&b).Encode(c); err != nil {
		panic(err) // the structs hold only encodable types
	}
	return b.String()
}
