// Package checkpoint reads and writes the trainer's checkpoints: safetensors files holding the weights under
// diffusers' UNet2DModel names, their EMA and the AdamW moments, with the run's counters and config in the
// metadata, written atomically and verified by a CRC-32C on load. Package train writes them; bin/sample and -resume
// read them.
package checkpoint

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/ddpmgo/ddpm/data"
	"github.com/ddpmgo/ddpm/internal/atomicfile"
	"github.com/ddpmgo/ddpm/model"
	"github.com/ddpmgo/ddpm/safetensors"
)

// Layout (safetensors, float32):
//
//	<name>                      the trained weights under diffusers' UNet2DModel state-dict keys
//	                            (conv_in.weight, down_blocks.0.resnets.0.norm1.weight, …), so that
//	                            UNet2DModel.load_state_dict(strict=False) / a filtered dict takes them as they are
//	ema/<name>                  the exponential moving average of the weights (what samples use)
//	adamw.exp_avg/<name>        AdamW's first moment m (torch's state name)
//	adamw.exp_avg_sq/<name>     AdamW's second moment v
//
// and in the metadata (all strings): format, step (optimizer steps taken, skipped ones included), adam_step (steps
// that updated the weights: the bias-correction count), skipped_steps, data_epoch and data_index (the data Loader's
// Position), rng_seed and rng_position (the RNG position: every draw is a pure function of (seed, stream, counter)
// and the counters of step s start at s, see package train, so the step is the position), config (the resolved TOML), and
// safetensors.ChecksumKey (CRC-32C of the data section, verified on load).
const (
	PrefixEMA   = "ema/"
	PrefixAdamM = "adamw.exp_avg/"
	PrefixAdamV = "adamw.exp_avg_sq/"

	// Format is the metadata "format" value of a trainer checkpoint.
	Format = "ddpm-go-checkpoint/1"

	// LatestName is the stable name of the newest checkpoint in a run's checkpoint folder (a hard link to it, or a
	// copy where links are not possible).
	LatestName = "latest.safetensors"
)

// State is everything a run needs to continue exactly where it stopped.
type State struct {
	Step     int // optimizer steps taken, skipped ones included
	AdamStep int // steps that updated the weights (AdamW's bias-correction count, EMA warm-up count)
	Skipped  int // steps skipped for a non-finite loss (train.skip_nonfinite)
	Data     data.Position
	Seed     uint64
	Config   string // resolved TOML

	Params, EMA, AdamM, AdamV []float32 // flat, laid out as the model's Table
}

// Dir is where a run keeps its checkpoints.
func Dir(runDir string) string { return filepath.Join(runDir, "checkpoints") }

// Name is the file name of the checkpoint after step steps.
func Name(step int) string { return fmt.Sprintf("step-%08d.safetensors", step) }

// Encode writes st as a safetensors checkpoint (Save writes it to a file, atomically).
func Encode(w io.Writer, table []model.Param, st *State) error {
	ts := make([]safetensors.Tensor, 0, 4*len(table))
	for _, group := range []struct {
		prefix string
		flat   []float32
	}{{"", st.Params}, {PrefixEMA, st.EMA}, {PrefixAdamM, st.AdamM}, {PrefixAdamV, st.AdamV}} {
		for _, p := range table {
			ts = append(ts, safetensors.Tensor{Name: group.prefix + p.Name, Shape: p.Shape, Data: group.flat[p.Offset : p.Offset+p.Size]})
		}
	}
	meta := map[string]string{
		"format":        Format,
		"step":          strconv.Itoa(st.Step),
		"adam_step":     strconv.Itoa(st.AdamStep),
		"skipped_steps": strconv.Itoa(st.Skipped),
		"data_epoch":    strconv.Itoa(st.Data.Epoch),
		"data_index":    strconv.Itoa(st.Data.Index),
		"rng_seed":      strconv.FormatUint(st.Seed, 10),
		"rng_position":  strconv.Itoa(st.Step),
		"config":        st.Config,
	}
	return safetensors.Write(w, ts, meta)
}

// Read loads a trainer checkpoint and checks it against the model's table: every weight, EMA and moment
// tensor must be present with the table's shape. Every error names the file.
func Read(path string, table []model.Param) (*State, error) {
	f, err := safetensors.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	return stateFromFile(f, table)
}

// ErrNotCheckpoint is wrapped by the errors of Config and Read for a valid safetensors file that is not a trainer
// checkpoint (its metadata format is not Format), such as diffusers weights.
var ErrNotCheckpoint = errors.New("not a trainer checkpoint")

// Config returns the resolved TOML a checkpoint was trained with (bin/sample rebuilds the model from
// it), reading and verifying the whole file.
func Config(path string) (string, *safetensors.File, error) {
	f, err := safetensors.ReadFile(path)
	if err != nil {
		return "", nil, fmt.Errorf("checkpoint: %w", err)
	}
	if f.Metadata["format"] != Format {
		return "", nil, fmt.Errorf("checkpoint %s: metadata format %q, want %q (%w)", path, f.Metadata["format"], Format, ErrNotCheckpoint)
	}
	return f.Metadata["config"], f, nil
}

func stateFromFile(f *safetensors.File, table []model.Param) (*State, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("checkpoint %s: "+format, append([]any{f.Path}, args...)...)
	}
	md := f.Metadata
	if md["format"] != Format {
		return nil, bad("metadata format %q, want %q (%w)", md["format"], Format, ErrNotCheckpoint)
	}
	st := &State{Config: md["config"]}
	ints := []struct {
		key string
		dst *int
	}{{"step", &st.Step}, {"adam_step", &st.AdamStep}, {"skipped_steps", &st.Skipped},
		{"data_epoch", &st.Data.Epoch}, {"data_index", &st.Data.Index}}
	for _, kv := range ints {
		v, err := strconv.Atoi(md[kv.key])
		if err != nil || v < 0 {
			return nil, bad("metadata %s = %q is not a count", kv.key, md[kv.key])
		}
		*kv.dst = v
	}
	seed, err := strconv.ParseUint(md["rng_seed"], 10, 64)
	if err != nil {
		return nil, bad("metadata rng_seed = %q is not a uint64", md["rng_seed"])
	}
	st.Seed = seed
	for _, g := range []struct {
		prefix string
		dst    *[]float32
	}{{"", &st.Params}, {PrefixEMA, &st.EMA}, {PrefixAdamM, &st.AdamM}, {PrefixAdamV, &st.AdamV}} {
		if *g.dst, err = Weights(f, table, g.prefix); err != nil {
			return nil, err
		}
	}
	if want := 4 * len(table); len(f.Tensors) != want {
		return nil, bad("holds %d tensors, the model has %d (×4 with EMA and AdamW moments = %d)", len(f.Tensors), len(table), want)
	}
	return st, nil
}

// Save writes st atomically as dir/step-NNNNNNNN.safetensors, points dir/latest.safetensors at it (a hard
// link replaced by rename, so it too changes atomically), and deletes all but the newest keep step files. It
// returns the new file's path.
func Save(dir string, table []model.Param, st *State, keep int) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	path := filepath.Join(dir, Name(st.Step))
	err := atomicfile.Write(path, func(w io.Writer) error { return Encode(w, table, st) })
	if err != nil {
		return "", fmt.Errorf("checkpoint: %w", err)
	}
	if err := linkLatest(dir, path); err != nil {
		return "", err
	}
	if err := prune(dir, keep); err != nil {
		return "", err
	}
	return path, nil
}

// linkLatest makes dir/latest.safetensors the same file as path: a hard link made under a temporary name and
// renamed over the old one; where hard links fail, an atomic copy.
func linkLatest(dir, path string) error {
	latest := filepath.Join(dir, LatestName)
	tmp := atomicfile.TempName(dir, LatestName, "link")
	os.Remove(tmp)
	if err := os.Link(path, tmp); err == nil {
		if err := os.Rename(tmp, latest); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("checkpoint: %w", err)
		}
		return atomicfile.SyncDir(dir)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	if err := atomicfile.WriteBytes(latest, b); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return nil
}

// List returns the step files of dir, oldest first.
func List(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("checkpoint: %w", err)
	}
	type ck struct {
		step int
		path string
	}
	var cks []ck
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, "step-") || !strings.HasSuffix(name, ".safetensors") {
			continue
		}
		s, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(name, "step-"), ".safetensors"))
		if err != nil {
			continue
		}
		cks = append(cks, ck{s, filepath.Join(dir, name)})
	}
	sort.Slice(cks, func(i, j int) bool { return cks[i].step < cks[j].step })
	out := make([]string, len(cks))
	for i, c := range cks {
		out[i] = c.path
	}
	return out, nil
}

// prune deletes all but the newest keep step files of dir.
func prune(dir string, keep int) error {
	cks, err := List(dir)
	if err != nil {
		return err
	}
	for i := 0; i < len(cks)-keep; i++ {
		if err := os.Remove(cks[i]); err != nil {
			return fmt.Errorf("checkpoint: prune: %w", err)
		}
	}
	return nil
}

// Weights gathers the tensors prefix+name of f, for every entry of the model's table, into one flat buffer laid
// out as the table (prefix "" for the trained weights, PrefixEMA for their average). Errors name the file.
func Weights(f *safetensors.File, table []model.Param, prefix string) ([]float32, error) {
	n := 0
	for _, p := range table {
		n = max(n, p.Offset+p.Size)
	}
	flat := make([]float32, n)
	for _, p := range table {
		t, ok := f.Get(prefix + p.Name)
		if !ok {
			return nil, fmt.Errorf("checkpoint %s: tensor %q is missing (the checkpoint is from another model configuration?)", f.Path, prefix+p.Name)
		}
		if !slices.Equal(t.Shape, p.Shape) {
			return nil, fmt.Errorf("checkpoint %s: tensor %q has shape %v, the model wants %v", f.Path, prefix+p.Name, t.Shape, p.Shape)
		}
		copy(flat[p.Offset:], t.Data)
	}
	return flat, nil
}
