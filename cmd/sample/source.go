package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/ddpmgo/ddpm/checkpoint"
	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/diffusers"
	"github.com/ddpmgo/ddpm/model"
)

// source is the model bin/sample draws from: a trainer checkpoint, or a diffusers model (a DDPMPipeline folder, a
// unet folder, or a weights file next to a config.json; see package diffusers), whose config.json builds the model
// and whose scheduler config, when present, sets the schedule, sample.variance and sample.clip (the rest of the
// sampler settings are this trainer's defaults and the flags).
type source struct {
	cfg     config.Config
	step    string                                       // the weights' step ("?" when unknown), known after weights
	weights func(table []model.Param) ([]float32, error) // the weights laid out as table
	note    string                                       // what stderr should say about the source, or ""
}

// errRawFolder is the usage error of -raw with a diffusers model.
var errRawFolder = errors.New("-raw: a diffusers model holds one set of weights (the trained or the EMA ones, as exported)")

// openSource reads the model at path (-ckpt) for the EMA weights, or the trained ones with raw.
func openSource(path string, raw bool) (*source, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return openFolder(path, raw)
	}
	text, f, err := checkpoint.Config(path)
	if err != nil {
		if errors.Is(err, checkpoint.ErrNotCheckpoint) {
			if diffusers.IsModelPath(path) {
				return openFolder(path, raw)
			}
			return nil, fmt.Errorf("%w; diffusers weights need their %s next to them (or give the pipeline folder)", err, diffusers.ConfigFile)
		}
		return nil, err
	}
	cfg, err := config.Parse(path, []byte(text), nil)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: stored config: %w", path, err)
	}
	return &source{cfg: cfg, step: f.Metadata["step"], weights: func(table []model.Param) ([]float32, error) {
		return checkpoint.Weights(f, table, weightsPrefix(raw))
	}}, nil
}

func openFolder(path string, raw bool) (*source, error) {
	if raw {
		return nil, errRawFolder
	}
	f, err := diffusers.Open(path)
	if err != nil {
		return nil, err
	}
	base := config.Default()
	base.Run.Name = "sample"
	cfg, err := f.Apply(base, nil)
	if err != nil {
		return nil, err
	}
	s := &source{cfg: cfg, step: "?"}
	if f.Scheduler == nil {
		d := cfg.Diffusion
		s.note = fmt.Sprintf("%s has no scheduler config: sampling with this trainer's default schedule (%s, T = %d, β %g…%g)",
			path, d.Schedule, d.Timesteps, d.BetaStart, d.BetaEnd)
	}
	s.weights = func(table []model.Param) ([]float32, error) {
		w, meta, err := f.Weights(table)
		if meta["step"] != "" {
			s.step = meta["step"]
		}
		return w, err
	}
	return s, nil
}
