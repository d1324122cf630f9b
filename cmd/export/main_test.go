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
	"github.com/ddpmgo/ddpm/diffusers"
	"github.com/ddpmgo/ddpm/internal/tinyrun"
	"github.com/ddpmgo/ddpm/model"
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
	// Options that change the model's maths, so that the export must carry them.
	cfg, res := tinyrun.Run(t, "model.freq_shift=1", "model.flip_sin_to_cos=false", "model.downsample_padding=0")
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
