package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/ddpmgo/ddpm/checkpoint"
	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/configs"
	"github.com/ddpmgo/ddpm/cpu"
	"github.com/ddpmgo/ddpm/data"
	"github.com/ddpmgo/ddpm/diffusers"
	"github.com/ddpmgo/ddpm/model"
	"github.com/ddpmgo/ddpm/rng"
	"github.com/ddpmgo/ddpm/train"
)

func export(args ...string) (int, string) {
	var o, e bytes.Buffer
	code := run(context.Background(), args, &o, &e)
	return code, e.String()
}

// TestExport trains a very small model for a few steps, exports its checkpoint, and reads the folder back: the
// run's model and schedule, the EMA weights (the trained ones with -raw), the loss plot and the step's sample grid.
func TestExport(t *testing.T) {
	src, err := configs.Files.ReadFile("tiny.toml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("tiny.toml", src, []string{"data.image_size=8", "model.block_channels=[8, 16]",
		"model.norm_groups=4", "model.freq_shift=1", "model.flip_sin_to_cos=false", "model.downsample_padding=0",
		"diffusion.timesteps=20", "train.batch_size=4", "train.max_steps=3", "sample.count=2", "sample.steps=2"})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Run.Dir = t.TempDir()
	m := &data.Images{C: 1, H: 8, W: 8, Pix: make([]uint8, 8*64)}
	for i := range m.Pix {
		m.Pix[i] = uint8(rng.Uint32(5, 1, uint64(i)))
	}
	res, err := train.Run(context.Background(), cfg, train.Options{Backend: cpu.New(), Dataset: m})
	if err != nil {
		t.Fatal(err)
	}
	table, err := model.Table(cfg.Model, 1, 8)
	if err != nil {
		t.Fatal(err)
	}
	st, err := checkpoint.Read(res.Checkpoint, table)
	if err != nil {
		t.Fatal(err)
	}
	for _, raw := range []bool{false, true} {
		out := filepath.Join(t.TempDir(), "ddpm")
		args := []string{"-ckpt", res.Checkpoint, "-out", out}
		want := st.EMA
		if raw {
			args, want = append(args, "-raw"), st.Params
		}
		if code, stderr := export(args...); code != 0 {
			t.Fatalf("export %v: exit %d: %s", args, code, stderr)
		}
		f, err := diffusers.Open(out)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(f.UNet.Model, cfg.Model) || f.Scheduler == nil || f.Scheduler.Diffusion != cfg.Diffusion {
			t.Errorf("exported configs: %+v %+v", f.UNet.Model, f.Scheduler)
		}
		w, meta, err := f.Weights(table)
		if err != nil || !slices.Equal(w, want) || meta["step"] != "3" {
			t.Errorf("raw=%v: exported weights differ from the checkpoint's (%v, metadata %v)", raw, err, meta)
		}
		for _, name := range []string{"loss.png", "samples.png"} {
			if _, err := os.Stat(filepath.Join(out, name)); err != nil {
				t.Errorf("%s missing from the folder", name)
			}
		}
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-ckpt", res.Checkpoint}, 2, "-out DIR are required"},
		{[]string{"-ckpt", filepath.Join(cfg.Run.Dir, "nope.safetensors"), "-out", t.TempDir()}, 1, "nope.safetensors"},
		{[]string{"-ckpt", filepath.Join(cfg.Run.Dir, train.EMAWeights), "-out", t.TempDir()}, 1, "not a trainer checkpoint"},
	} {
		code, stderr := export(tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("export %v: exit %d, %q; want %d and %q", tc.args, code, stderr, tc.code, tc.want)
		}
	}
}
