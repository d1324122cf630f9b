// Package diffusers writes and reads the folders of diffusers' DDPMPipeline (save_pretrained / from_pretrained):
//
//	model_index.json                          {"_class_name": "DDPMPipeline", "scheduler": [...], "unet": [...]}
//	unet/config.json                          UNet2DModel's arguments (EncodeUNet, ParseUNet)
//	unet/diffusion_pytorch_model.safetensors  the weights under UNet2DModel's state-dict names
//	scheduler/scheduler_config.json           DDPMScheduler's arguments (EncodeScheduler, ParseScheduler)
//
// and maps their configs to and from this trainer's config ([model], data.channels and data.image_size;
// [diffusion], sample.variance and sample.clip). A folder written here loads with
// DDPMPipeline.from_pretrained(folder); a folder written by diffusers (or a bare unet folder, or a weights file next
// to a config.json) loads here when its model is one this trainer builds, and is refused naming the key otherwise.
package diffusers

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/internal/atomicfile"
	"github.com/ddpmgo/ddpm/model"
	"github.com/ddpmgo/ddpm/ops"
	"github.com/ddpmgo/ddpm/safetensors"
)

// Files of a pipeline folder, as DDPMPipeline.save_pretrained lays them out.
const (
	ModelIndexFile = "model_index.json"
	UNetDir        = "unet"
	ConfigFile     = "config.json"
	WeightsFile    = "diffusion_pytorch_model.safetensors"
	SchedulerDir   = "scheduler"
	SchedulerFile  = "scheduler_config.json"
	// EMAWeightsFile is the trainer's bare EMA export (train.EMAWeights), accepted next to a config.json.
	EMAWeightsFile = "unet_ema.safetensors"
)

// Pipeline is what Write puts into a folder.
type Pipeline struct {
	// Config gives [model], data.channels and data.image_size (unet/config.json), and [diffusion], sample.variance
	// and sample.clip (scheduler/scheduler_config.json).
	Config  config.Config
	Table   []model.Param
	Weights []float32         // flat, laid out as Table
	Meta    map[string]string // more safetensors metadata (e.g. step, weights)
	Extras  []Extra           // files to put at the folder's top level (sample grid, loss plot)
}

// Extra is a file to include: Path, a finished file (every output of the trainer is replaced by rename, never
// rewritten in place), is hard-linked into the folder as Name, or copied where links are not possible.
type Extra struct{ Name, Path string }

// Write writes the pipeline folder dir atomically (atomicfile.WriteDir: a reader sees the old folder or the new
// one, never a mix; each file fsynced).
func Write(dir string, p Pipeline) error {
	c := p.Config
	ucfg, err := EncodeUNet(c.Model, c.Data.Channels, c.Data.ImageSize)
	if err != nil {
		return err
	}
	scfg, err := EncodeScheduler(c.Diffusion, c.Sample)
	if err != nil {
		return err
	}
	index, err := encode(map[string]any{
		"_class_name":        "DDPMPipeline",
		"_diffusers_version": Version,
		"scheduler":          []string{"diffusers", "DDPMScheduler"},
		"unet":               []string{"diffusers", "UNet2DModel"},
	})
	if err != nil {
		return err
	}
	ts := make([]safetensors.Tensor, len(p.Table))
	for i, t := range p.Table {
		if t.Offset+t.Size > len(p.Weights) {
			return fmt.Errorf("diffusers: %d weights, parameter %s needs [%d, %d)", len(p.Weights), t.Name, t.Offset, t.Offset+t.Size)
		}
		ts[i] = safetensors.Tensor{Name: t.Name, Shape: t.Shape, Data: p.Weights[t.Offset : t.Offset+t.Size]}
	}
	meta := map[string]string{"format": "pt"} // what torch's safetensors writer records; transformers checks it
	for k, v := range p.Meta {
		meta[k] = v
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("diffusers: %w", err)
	}
	err = atomicfile.WriteDir(dir, func(tmp string) error {
		for _, d := range []string{UNetDir, SchedulerDir} {
			if err := os.Mkdir(filepath.Join(tmp, d), 0o755); err != nil {
				return err
			}
		}
		for _, f := range []struct {
			path string
			data []byte
		}{{ModelIndexFile, index}, {filepath.Join(UNetDir, ConfigFile), ucfg}, {filepath.Join(SchedulerDir, SchedulerFile), scfg}} {
			if err := atomicfile.WriteBytes(filepath.Join(tmp, f.path), f.data); err != nil {
				return err
			}
		}
		err := atomicfile.Write(filepath.Join(tmp, UNetDir, WeightsFile), func(w io.Writer) error { return safetensors.Write(w, ts, meta) })
		if err != nil {
			return err
		}
		for _, e := range p.Extras {
			if err := linkOrCopy(e.Path, filepath.Join(tmp, e.Name)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("diffusers: %w", err)
	}
	return nil
}

// linkOrCopy makes dst the same file as src (a hard link), or an atomic copy of it.
func linkOrCopy(src, dst string) error {
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return atomicfile.WriteBytes(dst, b)
}

// Folder is a model found by Open: its config, weights file and (when present) scheduler config.
type Folder struct {
	Path          string     // as given to Open
	ConfigPath    string     // the UNet2DModel config.json
	WeightsPath   string     // the safetensors weights
	SchedulerPath string     // the scheduler_config.json ("" when there is none)
	UNet          UNet       // the parsed config.json
	Scheduler     *Scheduler // the parsed scheduler config (nil when there is none)
}

// Open finds and reads a model: a pipeline folder (model_index.json, unet/, scheduler/), a unet folder (config.json
// and diffusion_pytorch_model.safetensors or unet_ema.safetensors), or a .safetensors file next to a config.json.
// The scheduler config is scheduler/scheduler_config.json of the pipeline, or scheduler_config.json next to the
// config.json, or ../scheduler/scheduler_config.json of a unet folder inside a pipeline. Both configs are parsed (and
// refused when unsupported); the weights are read by Weights.
func Open(path string) (*Folder, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("diffusers: %w", err)
	}
	f := &Folder{Path: path}
	unetDir := path
	switch {
	case !st.IsDir():
		unetDir = filepath.Dir(path)
		f.WeightsPath = path
	case exists(filepath.Join(path, ModelIndexFile)):
		if err := checkIndex(filepath.Join(path, ModelIndexFile)); err != nil {
			return nil, err
		}
		unetDir = filepath.Join(path, UNetDir)
	}
	f.ConfigPath = filepath.Join(unetDir, ConfigFile)
	if !exists(f.ConfigPath) {
		return nil, fmt.Errorf("diffusers: %s: no %s (want a DDPMPipeline folder with %s, a unet folder with %s, or weights next to a %s)",
			path, f.ConfigPath, ModelIndexFile, ConfigFile, ConfigFile)
	}
	if f.WeightsPath == "" {
		for _, name := range []string{WeightsFile, EMAWeightsFile} {
			if p := filepath.Join(unetDir, name); exists(p) {
				f.WeightsPath = p
				break
			}
		}
		if f.WeightsPath == "" {
			hint := ""
			if exists(filepath.Join(unetDir, "diffusion_pytorch_model.bin")) {
				hint = " (diffusion_pytorch_model.bin, a pickle, is not read: save with safe_serialization=True)"
			}
			return nil, fmt.Errorf("diffusers: %s: no %s or %s in %s%s", path, WeightsFile, EMAWeightsFile, unetDir, hint)
		}
	}
	data, err := os.ReadFile(f.ConfigPath)
	if err != nil {
		return nil, fmt.Errorf("diffusers: %w", err)
	}
	if f.UNet, err = ParseUNet(f.ConfigPath, data); err != nil {
		return nil, fmt.Errorf("diffusers: %w", err)
	}
	for _, p := range []string{filepath.Join(unetDir, SchedulerFile), filepath.Join(unetDir, "..", SchedulerDir, SchedulerFile)} {
		if p == filepath.Join(unetDir, "..", SchedulerDir, SchedulerFile) && !exists(filepath.Join(unetDir, "..", ModelIndexFile)) {
			continue // a sibling scheduler/ counts inside a pipeline folder only
		}
		if exists(p) {
			f.SchedulerPath = p
			break
		}
	}
	if f.SchedulerPath != "" {
		data, err := os.ReadFile(f.SchedulerPath)
		if err != nil {
			return nil, fmt.Errorf("diffusers: %w", err)
		}
		s, err := ParseScheduler(f.SchedulerPath, data)
		if err != nil {
			return nil, fmt.Errorf("diffusers: %w", err)
		}
		f.Scheduler = &s
	}
	return f, nil
}

// checkIndex refuses a model_index.json whose unet is not diffusers' UNet2DModel (or whose scheduler, when listed,
// is not a DDPMScheduler).
func checkIndex(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("diffusers: %w", err)
	}
	o, err := decodeObject(path, data)
	if err != nil {
		return fmt.Errorf("diffusers: %w", err)
	}
	for _, c := range []struct{ key, class string }{{"unet", "UNet2DModel"}, {"scheduler", "DDPMScheduler"}} {
		v, ok := o.m[c.key]
		if !ok && c.key == "scheduler" {
			continue
		}
		l, isList := v.([]any)
		if !ok || !isList || len(l) != 2 || l[0] != "diffusers" || l[1] != c.class {
			return fmt.Errorf("diffusers: %w", o.refuse(c.key, v, fmt.Sprintf(`["diffusers", %q]`, c.class)))
		}
	}
	return nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// legacy are the names of the attention projections in checkpoints of diffusers before 0.14 (its deprecated
// AttentionBlock), which UNet2DModel still converts on load.
var legacy = []struct{ now, old string }{{".to_q.", ".query."}, {".to_k.", ".key."}, {".to_v.", ".value."}, {".to_out.0.", ".proj_attn."}}

// Weights reads the weights file into one flat buffer laid out as table (the model's, see model.UNet.Table) and
// returns its metadata. Every tensor of the table must be present with its shape (the attention projections may
// carry their pre-0.14 names: query, key, value, proj_attn), and the file may hold nothing else.
func (f *Folder) Weights(table []model.Param) ([]float32, map[string]string, error) {
	sf, err := safetensors.ReadFile(f.WeightsPath)
	if err != nil {
		return nil, nil, fmt.Errorf("diffusers: %w", err)
	}
	n := 0
	for _, p := range table {
		n = max(n, p.Offset+p.Size)
	}
	flat := make([]float32, n)
	used := map[string]bool{}
	for _, p := range table {
		t, ok := sf.Get(p.Name)
		name := p.Name
		for _, l := range legacy {
			if !ok && strings.Contains(p.Name, ".attentions.") && strings.Contains(p.Name, l.now) {
				name = strings.Replace(p.Name, l.now, l.old, 1)
				t, ok = sf.Get(name)
			}
		}
		if !ok {
			return nil, nil, fmt.Errorf("diffusers: %s: tensor %q is missing (the file does not match %s?)", f.WeightsPath, p.Name, f.ConfigPath)
		}
		if !slices.Equal(t.Shape, p.Shape) {
			return nil, nil, fmt.Errorf("diffusers: %s: tensor %q has shape %v, %s makes it %v", f.WeightsPath, name, t.Shape, f.ConfigPath, p.Shape)
		}
		copy(flat[p.Offset:], t.Data)
		used[name] = true
	}
	for _, t := range sf.Tensors {
		if !used[t.Name] {
			return nil, nil, fmt.Errorf("diffusers: %s: tensor %q is not a parameter of the model of %s", f.WeightsPath, t.Name, f.ConfigPath)
		}
	}
	return flat, sf.Metadata, nil
}

// NewUNet builds the folder's U-Net on b for batches of up to maxBatch images and loads its weights.
func (f *Folder) NewUNet(b ops.Backend, maxBatch int) (*model.UNet, error) {
	u, err := model.New(b, f.UNet.Model, f.UNet.InChannels, f.UNet.SampleSize, maxBatch)
	if err != nil {
		return nil, fmt.Errorf("diffusers: %s: %w", f.ConfigPath, err)
	}
	w, _, err := f.Weights(u.Table())
	if err != nil {
		return nil, err
	}
	b.Upload(u.Params(), w)
	return u, nil
}

// Apply returns base with the folder's model, [model] and data.channels, data.image_size, and, when the folder has
// a scheduler config, its schedule: [diffusion], sample.variance and sample.clip. With the ddpm sampler taking all
// steps, sample.steps follows the folder's number of timesteps. overrides are the -set values base was made with:
// one that gives any of those keys another value than the folder's is an error naming the -set, the folder's file
// and the folder's value, so that a contradiction is never resolved silently.
func (f *Folder) Apply(base config.Config, overrides []string) (config.Config, error) {
	c := base
	c.Model = cloneModel(f.UNet.Model)
	c.Data.Channels, c.Data.ImageSize = f.UNet.InChannels, f.UNet.SampleSize
	if s := f.Scheduler; s != nil {
		if c.Sample.Sampler == "ddpm" && c.Sample.Steps == c.Diffusion.Timesteps {
			c.Sample.Steps = s.Diffusion.Timesteps
		}
		c.Diffusion = s.Diffusion
		c.Sample.Variance, c.Sample.Clip = s.Variance, s.Clip
	}
	if err := c.Validate(); err != nil {
		return config.Config{}, fmt.Errorf("diffusers: the config with the model of %s: %w", f.Path, err)
	}
	var values map[string]map[string]any
	if _, err := toml.Decode(c.TOML(), &values); err != nil {
		return config.Config{}, fmt.Errorf("diffusers: %w", err)
	}
	for _, o := range overrides {
		again, err := config.Parse(f.Path, []byte(c.TOML()), []string{o})
		if err == nil {
			again.Run = c.Run // [run] is none of the folder's business (and Parse fills its defaults)
		}
		if err == nil && reflect.DeepEqual(again, c) {
			continue
		}
		key, _, _ := strings.Cut(o, "=")
		key = strings.TrimSpace(key)
		section, field, _ := strings.Cut(key, ".")
		src := f.ConfigPath
		if section == "diffusion" || section == "sample" {
			src = f.SchedulerPath
		}
		return config.Config{}, fmt.Errorf("diffusers: -set %s contradicts %s, which makes %s = %v (a model folder sets [model], "+
			"data.channels, data.image_size and, with a scheduler config, [diffusion], sample.variance and sample.clip; drop the -set)",
			o, src, key, show(values[section][field]))
	}
	return c, nil
}

// cloneModel copies m with slices of its own.
func cloneModel(m config.Model) config.Model {
	m.BlockChannels = slices.Clone(m.BlockChannels)
	for _, p := range []*[]int{&m.AttentionResolutions, &m.DownAttentionResolutions, &m.UpAttentionResolutions} {
		*p = append([]int{}, *p...)
	}
	return m
}

// IsModelPath says whether path is a folder, or a file next to a config.json: what Open reads (as opposed to a
// trainer checkpoint, which is a lone safetensors file).
func IsModelPath(path string) bool {
	st, err := os.Stat(path)
	if err != nil {
		return false
	}
	return st.IsDir() || exists(filepath.Join(filepath.Dir(path), ConfigFile))
}
