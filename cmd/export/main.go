// Command export writes a trainer checkpoint as a diffusers DDPMPipeline folder, for DDPMPipeline.from_pretrained.
//
//	bin/export -ckpt runs/fashion32/checkpoints/latest.safetensors -out fashion32-ddpm
//	bin/export -ckpt CKPT -out DIR -raw          the trained weights instead of their EMA
//
// Exit status: 0 success, 2 usage errors, 1 runtime failures (including a damaged checkpoint).
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/ddpmgo/ddpm/checkpoint"
	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/diffusers"
	"github.com/ddpmgo/ddpm/internal/cli"
	"github.com/ddpmgo/ddpm/model"
)

func main() { cli.Main(run) }

const usageHead = `Usage: export -ckpt PATH -out DIR [-raw]

Writes the model of a checkpoint written by bin/train as a folder laid out as diffusers' DDPMPipeline.save_pretrained
writes it: model_index.json, unet/config.json and unet/diffusion_pytorch_model.safetensors (the EMA weights unless
-raw), scheduler/scheduler_config.json (a DDPMScheduler with the run's schedule, sample.variance and sample.clip).
When the checkpoint lies in a run directory (RUN/checkpoints/...), the run's loss.png and the sample grid of the
checkpoint's step, if there is one, go into the folder too. Load it in Python with

    from diffusers import DDPMPipeline
    pipe = DDPMPipeline.from_pretrained(DIR)

The folder is written atomically: a reader sees the old one or the new one, never a mix. bin/train leaves the same
folder of its EMA weights in RUN/pipeline at the end of every run.

Flags:
`

const usageTail = `
Exit status: 0 success, 2 usage error, 1 runtime failure.
`

func run(_ context.Context, args []string, stdout, stderr io.Writer) int {
	fs := cli.New("export", usageHead, usageTail, stderr)
	ckpt := fs.String("ckpt", "", "trainer checkpoint `PATH` (e.g. runs/fashion32/checkpoints/latest.safetensors)")
	out := fs.String("out", "", "pipeline folder `DIR` to write (replaced if it exists)")
	raw := fs.Bool("raw", false, "export the trained weights instead of their EMA")
	if status, ok := fs.Parse(args); !ok {
		return status
	}
	if *ckpt == "" || *out == "" {
		return fs.Usagef("-ckpt PATH and -out DIR are required (see -h)")
	}
	text, f, err := checkpoint.Config(*ckpt)
	if err != nil {
		return fs.Fail(err)
	}
	cfg, err := config.Parse(*ckpt, []byte(text), nil)
	if err != nil {
		return fs.Fail(fmt.Errorf("checkpoint %s: stored config: %w", *ckpt, err))
	}
	table, err := model.Table(cfg.Model, cfg.Data.Channels, cfg.Data.ImageSize)
	if err != nil {
		return fs.Fail(fmt.Errorf("checkpoint %s: %w", *ckpt, err))
	}
	prefix, weights := checkpoint.PrefixEMA, "ema"
	if *raw {
		prefix, weights = "", "raw"
	}
	w, err := checkpoint.Weights(f, table, prefix)
	if err != nil {
		return fs.Fail(err)
	}
	step := f.Metadata["step"]
	var extras []diffusers.Extra
	if ckdir := filepath.Dir(*ckpt); filepath.Base(ckdir) == "checkpoints" {
		runDir := filepath.Dir(ckdir)
		n, _ := strconv.Atoi(step)
		for _, e := range []diffusers.Extra{{Name: "loss.png", Path: filepath.Join(runDir, "loss.png")},
			{Name: "samples.png", Path: filepath.Join(runDir, "samples", fmt.Sprintf("step-%08d.png", n))}} {
			if _, err := os.Stat(e.Path); err == nil {
				extras = append(extras, e)
			}
		}
	}
	err = diffusers.Write(*out, diffusers.Pipeline{Config: cfg, Table: table, Weights: w,
		Meta: map[string]string{"step": step, "weights": weights}, Extras: extras})
	if err != nil {
		return fs.Fail(err)
	}
	fmt.Fprintf(stderr, "export: %s (step %s, %s weights, %d parameters) → %s\n", *ckpt, step, weights, len(w), *out)
	return cli.OK
}
