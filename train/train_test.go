package train

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"image/png"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ddpmgo/ddpm/checkpoint"
	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/configs"
	"github.com/ddpmgo/ddpm/cpu"
	"github.com/ddpmgo/ddpm/data"
	"github.com/ddpmgo/ddpm/internal/atomicfile"
	"github.com/ddpmgo/ddpm/internal/faultio"
	"github.com/ddpmgo/ddpm/model"
	"github.com/ddpmgo/ddpm/rng"
	"github.com/ddpmgo/ddpm/safetensors"
)

// testConfig is configs/tiny.toml shrunk further (8×8 images, channels 8/16, batch 4, T = 50) so that a step
// takes milliseconds, writing into dir.
func testConfig(t *testing.T, dir string, overrides ...string) config.Config {
	t.Helper()
	src, err := configs.Files.ReadFile("tiny.toml")
	if err != nil {
		t.Fatal(err)
	}
	base := []string{
		"data.image_size=8", "data.max_items=0", "model.block_channels=[8, 16]", "model.norm_groups=4",
		"diffusion.timesteps=50", "train.batch_size=4", "train.log_every=2", "train.checkpoint_every=0",
		"train.sample_every=0", "sample.count=4", "sample.steps=5", "train.warmup_steps=2",
	}
	cfg, err := config.Parse("tiny.toml", src, append(base, overrides...))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Run.Dir = dir
	return cfg
}

// synthetic is a data set of n 1×8×8 images: smooth random blobs, so that there is something to learn.
func synthetic(n int) *data.Images {
	m := &data.Images{C: 1, H: 8, W: 8, Pix: make([]uint8, n*64)}
	for k := 0; k < n; k++ {
		cx := 2 + 4*rng.Uniform(99, 1, uint64(2*k))
		cy := 2 + 4*rng.Uniform(99, 1, uint64(2*k+1))
		for y := 0; y < 8; y++ {
			for x := 0; x < 8; x++ {
				d := (float32(x)-cx)*(float32(x)-cx) + (float32(y)-cy)*(float32(y)-cy)
				m.Pix[k*64+y*8+x] = uint8(255 * math.Exp(-float64(d)/4))
			}
		}
	}
	return m
}

func run(t *testing.T, ctx context.Context, cfg config.Config, ds data.Dataset, resume bool) (Result, error) {
	t.Helper()
	return Run(ctx, cfg, Options{Backend: cpu.New(), Dataset: ds, Resume: resume})
}

func mustRun(t *testing.T, cfg config.Config, ds data.Dataset, resume bool) Result {
	t.Helper()
	res, err := run(t, context.Background(), cfg, ds, resume)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func tinyTable(t *testing.T, cfg config.Config) []model.Param {
	t.Helper()
	u, err := model.New(cpu.New(), cfg.Model, cfg.Data.Channels, cfg.Data.ImageSize, 1)
	if err != nil {
		t.Fatal(err)
	}
	return u.Table()
}

func readTensors(t *testing.T, path string) *safetensors.File {
	t.Helper()
	f, err := safetensors.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// sameTensors reports the first tensor (by name) whose bits differ between two files.
func sameTensors(t *testing.T, a, b *safetensors.File) {
	t.Helper()
	if len(a.Tensors) != len(b.Tensors) {
		t.Fatalf("%d vs %d tensors", len(a.Tensors), len(b.Tensors))
	}
	for _, ta := range a.Tensors {
		tb, ok := b.Get(ta.Name)
		if !ok {
			t.Fatalf("%s missing in %s", ta.Name, b.Path)
		}
		for i := range ta.Data {
			if math.Float32bits(ta.Data[i]) != math.Float32bits(tb.Data[i]) {
				t.Fatalf("%s[%d]: %v (%s) vs %v (%s)", ta.Name, i, ta.Data[i], a.Path, tb.Data[i], b.Path)
			}
		}
	}
}

func TestResumeIsBitIdentical(t *testing.T) {
	for _, tc := range []struct {
		name  string
		extra []string
	}{
		{"plain", nil},
		// Accumulation, dropout and flips exercise every counter a resume must restore.
		{"accum-dropout-flip", []string{"train.grad_accum=2", "model.dropout=0.1", "data.flip=true"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ds := synthetic(24) // 6 batches per epoch: the 8 steps cross an epoch boundary
			straight := testConfig(t, t.TempDir(), append(tc.extra, "train.max_steps=8", "train.checkpoint_every=4")...)
			r1 := mustRun(t, straight, ds, false)

			dir := t.TempDir()
			mustRun(t, testConfig(t, dir, append(tc.extra, "train.max_steps=4", "train.checkpoint_every=4")...), ds, false)
			r2 := mustRun(t, testConfig(t, dir, append(tc.extra, "train.max_steps=8", "train.checkpoint_every=4")...), ds, true)
			if r1.Step != 8 || r2.Step != 8 {
				t.Fatalf("steps %d and %d, want 8", r1.Step, r2.Step)
			}
			a, b := readTensors(t, r1.Checkpoint), readTensors(t, r2.Checkpoint)
			sameTensors(t, a, b)
			for _, k := range []string{"step", "adam_step", "data_epoch", "data_index"} {
				if a.Metadata[k] != b.Metadata[k] {
					t.Errorf("metadata %s: %s vs %s", k, a.Metadata[k], b.Metadata[k])
				}
			}
			// The identity is not vacuous: the weights moved between step 4 and step 8.
			mid := readTensors(t, filepath.Join(checkpoint.Dir(dir), checkpoint.Name(4)))
			w4, _ := mid.Get("conv_in.weight")
			w8, _ := b.Get("conv_in.weight")
			if w4.Data[0] == w8.Data[0] && w4.Data[1] == w8.Data[1] {
				t.Error("weights did not change between steps 4 and 8")
			}
			// metrics.jsonl of the resumed run reads as one run: steps 1, 2, 4, 6, 8.
			var steps []int
			for _, m := range readMetrics(t, dir) {
				steps = append(steps, m.Step)
			}
			if want := []int{1, 2, 4, 6, 8}; !reflect.DeepEqual(steps, want) {
				t.Errorf("metrics steps %v", steps)
			}
		})
	}
}

func readMetrics(t *testing.T, dir string) []Metrics {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	var ms []Metrics
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var m Metrics
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		ms = append(ms, m)
	}
	return ms
}

func TestRunLeavesItsFilesAndLearns(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir, "train.max_steps=40", "train.log_every=10", "train.checkpoint_every=20",
		"train.sample_every=20", "train.lr=3e-3")
	res := mustRun(t, cfg, synthetic(32), false)
	for _, f := range []string{ConfigFile, MetricsFile, LossPlot, EMAWeights, "samples/step-00000020.png",
		"samples/step-00000040.png", "checkpoints/step-00000020.safetensors", "checkpoints/step-00000040.safetensors",
		"checkpoints/" + checkpoint.LatestName} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("run directory lacks %s", f)
		}
	}
	if res.Samples != filepath.Join(dir, "samples/step-00000040.png") {
		t.Errorf("Result.Samples = %s", res.Samples)
	}
	pf, err := os.Open(filepath.Join(dir, LossPlot))
	if err != nil {
		t.Fatal(err)
	}
	defer pf.Close()
	if _, err := png.Decode(pf); err != nil {
		t.Errorf("loss plot: %v", err)
	}
	ms := readMetrics(t, dir)
	if len(ms) != 5 || ms[0].Step != 1 || ms[1].Step != 10 || ms[4].Step != 40 {
		t.Fatalf("%d metrics lines (%+v), want steps 1, 10, 20, 30, 40", len(ms), ms)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, MetricsFile))
	for _, key := range []string{`"step"`, `"loss"`, `"lr"`, `"grad_norm"`, `"images_per_sec"`} {
		if !bytes.Contains(raw, []byte(key)) {
			t.Errorf("metrics lack %s", key)
		}
	}
	first, last := ms[0], ms[len(ms)-1]
	// An untrained ε-predictor's MSE is about E[ε²] = 1 (plus its own output's variance); training lowers it.
	if !(first.Loss > 0.5 && first.Loss < 3) || !(last.Loss < 0.7*first.Loss) {
		t.Errorf("loss %g → %g: expected ε-MSE near 1 falling", first.Loss, last.Loss)
	}
	if last.LR != 3e-3 || !(ms[0].GradNorm > 0) || !(last.ImagesPerSec > 0) {
		t.Errorf("last metrics %+v", last)
	}
	// The saved config is the resolved one, and it parses back to the same values.
	src, _ := os.ReadFile(filepath.Join(dir, ConfigFile))
	back, err := config.Parse("config.toml", src, nil)
	if err != nil || back.Train.MaxSteps != 40 || back.Data.ImageSize != 8 {
		t.Errorf("saved config: %v %+v", err, back.Train)
	}
	// The EMA export holds exactly the model's weights under their names, equal to the checkpoint's ema/ tensors.
	ema := readTensors(t, filepath.Join(dir, EMAWeights))
	ck := readTensors(t, res.Checkpoint)
	table := tinyTable(t, cfg)
	if len(ema.Tensors) != len(table) {
		t.Fatalf("EMA export has %d tensors, model %d", len(ema.Tensors), len(table))
	}
	for _, p := range table {
		e, ok := ema.Get(p.Name)
		c, _ := ck.Get(checkpoint.PrefixEMA + p.Name)
		if !ok || !slices.Equal(e.Shape, p.Shape) || e.Data[0] != c.Data[0] {
			t.Errorf("EMA export %s", p.Name)
		}
	}
	// A fresh run in the same directory is refused: it would overwrite the checkpoints.
	if _, err := run(t, context.Background(), cfg, synthetic(32), false); err == nil || !strings.Contains(err.Error(), "-resume") {
		t.Errorf("fresh run over existing checkpoints: %v", err)
	}
}

func TestNonFiniteLossStopsNamingTheStep(t *testing.T) {
	// A learning rate of 1e30 turns the weights huge after step 1, so the loss of step 2 overflows.
	dir := t.TempDir()
	cfg := testConfig(t, dir, "train.max_steps=5", "train.lr=1e30", "train.warmup_steps=0", "train.checkpoint_every=1", "train.grad_clip=0")
	_, err := run(t, context.Background(), cfg, synthetic(16), false)
	if !errors.Is(err, ErrNonFinite) {
		t.Fatalf("want ErrNonFinite, got %v", err)
	}
	good := filepath.Join(checkpoint.Dir(dir), checkpoint.Name(1))
	if !strings.Contains(err.Error(), "step 2") || !strings.Contains(err.Error(), good) {
		t.Errorf("error should name step 2 and %s: %v", good, err)
	}
	if _, err := checkpoint.Read(filepath.Join(checkpoint.Dir(dir), checkpoint.LatestName), tinyTable(t, cfg)); err != nil {
		t.Errorf("last good checkpoint unreadable: %v", err)
	}
	if cks, _ := checkpoint.List(checkpoint.Dir(dir)); len(cks) != 1 {
		t.Errorf("checkpoints after the failure: %v", cks)
	}

	// With skip_nonfinite the run goes on, counting the skipped steps and leaving the weights as they were.
	dir2 := t.TempDir()
	cfg2 := testConfig(t, dir2, "train.max_steps=4", "train.lr=1e30", "train.warmup_steps=0", "train.checkpoint_every=1",
		"train.grad_clip=0", "train.skip_nonfinite=true", "train.keep_checkpoints=10")
	res, err := run(t, context.Background(), cfg2, synthetic(16), false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Step != 4 || res.Skipped != 3 {
		t.Errorf("step %d skipped %d, want 4 and 3", res.Step, res.Skipped)
	}
	a := readTensors(t, filepath.Join(checkpoint.Dir(dir2), checkpoint.Name(1)))
	b := readTensors(t, filepath.Join(checkpoint.Dir(dir2), checkpoint.Name(4)))
	wa, _ := a.Get("conv_in.weight")
	wb, _ := b.Get("conv_in.weight")
	for i := range wa.Data {
		if math.Float32bits(wa.Data[i]) != math.Float32bits(wb.Data[i]) {
			t.Fatalf("skipped steps changed the weights at %d", i)
		}
	}
	if b.Metadata["skipped_steps"] != "3" || b.Metadata["adam_step"] != "1" {
		t.Errorf("metadata %v", b.Metadata)
	}
}

func TestDamagedCheckpointIsRefusedNamingTheFile(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir, "train.max_steps=1")
	res := mustRun(t, cfg, synthetic(8), false)
	good, err := os.ReadFile(res.Checkpoint)
	if err != nil {
		t.Fatal(err)
	}
	table := tinyTable(t, cfg)
	damaged := map[string][]byte{
		"truncated.safetensors": good[:len(good)*2/3],
		"flipped.safetensors": func() []byte {
			c := bytes.Clone(good)
			c[len(c)-100] ^= 0x10 // one bit of the AdamW moments
			return c
		}(),
	}
	for name, b := range damaged {
		p := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := checkpoint.Read(p, table); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: %v", name, err)
		}
		_, err := Run(context.Background(), testConfig(t, t.TempDir(), "train.max_steps=2"),
			Options{Backend: cpu.New(), Dataset: synthetic(8), ResumeFrom: p})
		if err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("resume from %s: %v", name, err)
		}
	}
	// A checkpoint of another model is refused naming the tensor.
	other := testConfig(t, t.TempDir(), "model.block_channels=[8, 8]")
	if _, err := checkpoint.Read(res.Checkpoint, tinyTable(t, other)); err == nil || !strings.Contains(err.Error(), res.Checkpoint) {
		t.Errorf("other model: %v", err)
	}
}

var errInjected = errors.New("injected write error")

func TestCheckpointWriteIsAtomic(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir, "train.max_steps=1")
	mustRun(t, cfg, synthetic(8), false)
	table := tinyTable(t, cfg)
	ckdir := checkpoint.Dir(dir)
	before, err := os.ReadFile(filepath.Join(ckdir, checkpoint.LatestName))
	if err != nil {
		t.Fatal(err)
	}
	st, err := checkpoint.Read(filepath.Join(ckdir, checkpoint.LatestName), table)
	if err != nil {
		t.Fatal(err)
	}
	st.Step = 2
	atomicfile.Fault = func(_ string, w io.Writer) io.Writer { return &faultio.Writer{W: w, N: 3000, Err: errInjected} }
	defer func() { atomicfile.Fault = nil }()
	if _, err := checkpoint.Save(ckdir, table, st, 3); !errors.Is(err, errInjected) {
		t.Fatalf("want the injected error, got %v", err)
	}
	ents, _ := os.ReadDir(ckdir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if len(names) != 2 || names[0] != checkpoint.LatestName || names[1] != checkpoint.Name(1) {
		t.Errorf("checkpoint folder after a failed write: %v (want only the old checkpoint and latest)", names)
	}
	after, _ := os.ReadFile(filepath.Join(ckdir, checkpoint.LatestName))
	if !bytes.Equal(before, after) {
		t.Error("latest changed after a failed write")
	}
	// Without the fault the same save works and moves latest.
	atomicfile.Fault = nil
	if _, err := checkpoint.Save(ckdir, table, st, 3); err != nil {
		t.Fatal(err)
	}
	if got, err := checkpoint.Read(filepath.Join(ckdir, checkpoint.LatestName), table); err != nil || got.Step != 2 {
		t.Errorf("latest after a good write: %v %v", got, err)
	}
}

func TestKeepLastK(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir, "train.max_steps=5", "train.checkpoint_every=1", "train.keep_checkpoints=2")
	mustRun(t, cfg, synthetic(8), false)
	cks, err := checkpoint.List(checkpoint.Dir(dir))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{filepath.Join(checkpoint.Dir(dir), checkpoint.Name(4)), filepath.Join(checkpoint.Dir(dir), checkpoint.Name(5))}
	if len(cks) != 2 || cks[0] != want[0] || cks[1] != want[1] {
		t.Errorf("kept %v, want %v", cks, want)
	}
	st, err := checkpoint.Read(filepath.Join(checkpoint.Dir(dir), checkpoint.LatestName), tinyTable(t, cfg))
	if err != nil || st.Step != 5 {
		t.Errorf("latest: %v %v", st, err)
	}
}

// cancelling is a data set that cancels a context once its images have been read `after` times.
type cancelling struct {
	*data.Images
	after  int64
	reads  atomic.Int64
	cancel context.CancelFunc
}

func (c *cancelling) Image(i int, dst []uint8) {
	if c.reads.Add(1) == c.after {
		c.cancel()
	}
	c.Images.Image(i, dst)
}

func TestInterruptFinishesTheStepAndCheckpoints(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir, "train.max_steps=100")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The cancel comes while the 3rd batch (step 3) is being gathered: step 3 completes, then the run stops.
	ds := &cancelling{Images: synthetic(16), after: 2*4 + 2, cancel: cancel}
	res, err := Run(ctx, cfg, Options{Backend: cpu.New(), Dataset: ds})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Interrupted || res.Step != 3 {
		t.Fatalf("interrupted %v at step %d, want true at 3", res.Interrupted, res.Step)
	}
	st, err := checkpoint.Read(res.Checkpoint, tinyTable(t, cfg))
	if err != nil || st.Step != 3 {
		t.Fatalf("checkpoint %s: %v %v", res.Checkpoint, st, err)
	}
	// Resuming continues from there to the end of the budget.
	res2 := mustRun(t, testConfig(t, dir, "train.max_steps=5"), synthetic(16), true)
	if res2.Step != 5 || res2.Interrupted {
		t.Errorf("resumed run: %+v", res2)
	}
}

// TestCheckpointNamesAreTheModelTable checks, for the CelebA recipe's U-Net, that the checkpoint's un-prefixed
// tensors are exactly model.Table() (diffusers' UNet2DModel state-dict keys and shapes) and that each prefixed group
// mirrors it.
func TestCheckpointNamesAreTheModelTable(t *testing.T) {
	src, err := configs.Files.ReadFile("celeba32.toml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("celeba32.toml", src, nil)
	if err != nil {
		t.Fatal(err)
	}
	u, err := model.New(cpu.New(), cfg.Model, cfg.Data.Channels, cfg.Data.ImageSize, 1)
	if err != nil {
		t.Fatal(err)
	}
	table := u.Table()
	if u.NumParams() != 14406531 {
		t.Errorf("celeba32 U-Net has %d parameters; the recipe says 14,406,531", u.NumParams())
	}
	P := u.NumParams()
	st := &checkpoint.State{Config: cfg.TOML(), Params: make([]float32, P), EMA: make([]float32, P), AdamM: make([]float32, P), AdamV: make([]float32, P)}
	var b bytes.Buffer
	if err := checkpoint.Encode(&b, table, st); err != nil {
		t.Fatal(err)
	}
	f, err := safetensors.Decode(b.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	plain := map[string][]int{}
	for _, ts := range f.Tensors {
		switch {
		case strings.HasPrefix(ts.Name, checkpoint.PrefixEMA), strings.HasPrefix(ts.Name, checkpoint.PrefixAdamM), strings.HasPrefix(ts.Name, checkpoint.PrefixAdamV):
		default:
			plain[ts.Name] = ts.Shape
		}
	}
	if len(plain) != len(table) {
		t.Errorf("%d un-prefixed tensors, model has %d", len(plain), len(table))
	}
	for _, p := range table {
		if s, ok := plain[p.Name]; !ok || !slices.Equal(s, p.Shape) {
			t.Errorf("weight %s: shape %v in the checkpoint, %v in the model", p.Name, s, p.Shape)
		}
		for _, pre := range []string{checkpoint.PrefixEMA, checkpoint.PrefixAdamM, checkpoint.PrefixAdamV} {
			if ts, ok := f.Get(pre + p.Name); !ok || !slices.Equal(ts.Shape, p.Shape) {
				t.Errorf("%s%s missing or misshapen", pre, p.Name)
			}
		}
	}
	// A few keys of diffusers' UNet2DModel state dict for this architecture, spelled out by hand.
	for name, shape := range map[string][]int{
		"conv_in.weight":                               {64, 3, 3, 3},
		"time_embedding.linear_1.weight":               {256, 64},
		"down_blocks.0.resnets.0.norm1.weight":         {64},
		"down_blocks.1.resnets.0.conv_shortcut.weight": {128, 64, 1, 1},
		"down_blocks.0.downsamplers.0.conv.weight":     {64, 64, 3, 3},
		"mid_block.attentions.0.to_q.weight":           {256, 256},
		"mid_block.attentions.0.group_norm.weight":     {256},
		"up_blocks.0.resnets.2.conv1.weight":           {256, 384, 3, 3},
		"up_blocks.2.resnets.2.conv_shortcut.weight":   {64, 128, 1, 1},
		"conv_norm_out.weight":                         {64},
		"conv_out.weight":                              {3, 64, 3, 3},
	} {
		if s, ok := plain[name]; !ok || !slices.Equal(s, shape) {
			t.Errorf("diffusers key %s: got %v (present %v), want %v", name, s, ok, shape)
		}
	}
}
