package train

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"

	"go.uber.org/zap"

	"github.com/ddpmgo/ddpm/checkpoint"
	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/diffusers"
)

// Where a run starts from: a checkpoint of its own (-resume, -resume-from) or a model someone else trained
// (-init-from, a diffusers folder).

// InitConfig is cfg with the model (and schedule) of the diffusers folder at path, as Run uses it for
// Options.InitFrom (see diffusers.Folder.Apply; overrides are the -set values cfg was made with), and the folder.
func InitConfig(cfg config.Config, path string, overrides []string) (config.Config, *diffusers.Folder, error) {
	f, err := diffusers.Open(path)
	if err != nil {
		return config.Config{}, nil, fmt.Errorf("train: -init-from: %w", err)
	}
	c, err := f.Apply(cfg, overrides)
	if err != nil {
		return config.Config{}, nil, fmt.Errorf("train: -init-from: %w", err)
	}
	return c, f, nil
}

// resumePath is the checkpoint a run continues from ("" for a fresh run), refusing to start afresh over a run
// directory that holds checkpoints.
func resumePath(opt Options, dir string) (string, error) {
	latest := filepath.Join(checkpoint.Dir(dir), checkpoint.LatestName)
	switch {
	case opt.ResumeFrom != "":
		return opt.ResumeFrom, nil
	case opt.Resume:
		if _, err := os.Stat(latest); err != nil {
			return "", fmt.Errorf("train: -resume: no checkpoint %s in run directory %s (start without -resume, or use -resume-from PATH)", latest, dir)
		}
		return latest, nil
	}
	if _, err := os.Stat(latest); err == nil {
		return "", fmt.Errorf("train: run directory %s already holds checkpoints; continue it with -resume, or start afresh with another run.dir (-set run.dir=...) or after deleting it", dir)
	}
	return "", nil
}

// restore loads a checkpoint into the model, the optimizer, the EMA, the Loader and the counters.
func (tr *trainer) restore(path string) error {
	st, err := checkpoint.Read(path, tr.table)
	if err != nil {
		return fmt.Errorf("train: resume: %w", err)
	}
	if err := checkResumable(path, st.Config, tr.cfg, tr.log); err != nil {
		return err
	}
	be := tr.be
	be.Upload(tr.unet.Params(), st.Params)
	be.Upload(tr.ema, st.EMA)
	be.Upload(tr.m, st.AdamM)
	be.Upload(tr.v, st.AdamV)
	if err := tr.ld.Seek(st.Data); err != nil {
		return fmt.Errorf("train: resume from %s: %w", path, err)
	}
	tr.st = checkpoint.State{Step: st.Step, AdamStep: st.AdamStep, Skipped: st.Skipped}
	tr.out.lastCkpt, tr.out.lastSave = path, st.Step
	tr.log.Info("resumed", zap.String("checkpoint", path), zap.Int("step", st.Step),
		zap.Int("data_epoch", st.Data.Epoch), zap.Int("data_index", st.Data.Index))
	return nil
}

// checkResumable refuses a checkpoint whose model or diffusion process differs from cfg (its weights would not fit
// or would mean something else) and warns about settings that make the continuation differ from a run that never
// stopped.
func checkResumable(path, saved string, cfg config.Config, log *zap.Logger) error {
	old, err := config.Parse(path, []byte(saved), nil)
	if err != nil {
		return fmt.Errorf("train: resume: checkpoint %s: its config does not parse: %w", path, err)
	}
	if !reflect.DeepEqual(old.Model, cfg.Model) {
		return fmt.Errorf("train: resume: checkpoint %s was trained with [model] %+v, the config says %+v", path, old.Model, cfg.Model)
	}
	if !reflect.DeepEqual(old.Diffusion, cfg.Diffusion) {
		return fmt.Errorf("train: resume: checkpoint %s was trained with [diffusion] %+v, the config says %+v", path, old.Diffusion, cfg.Diffusion)
	}
	if old.Data.Channels != cfg.Data.Channels || old.Data.ImageSize != cfg.Data.ImageSize {
		return fmt.Errorf("train: resume: checkpoint %s was trained on %d-channel %dpx images, the config says %d-channel %dpx",
			path, old.Data.Channels, old.Data.ImageSize, cfg.Data.Channels, cfg.Data.ImageSize)
	}
	o, n := old.Train, cfg.Train
	if o.Seed != n.Seed || o.BatchSize != n.BatchSize || o.GradAccum != n.GradAccum ||
		old.Data.Path != cfg.Data.Path || old.Data.MaxItems != cfg.Data.MaxItems || old.Data.Flip != cfg.Data.Flip {
		log.Warn("resuming with different seed, batch, accumulation or data settings: the continuation will not match a run that never stopped",
			zap.String("checkpoint", path))
	}
	return nil
}
