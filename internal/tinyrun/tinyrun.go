// Package tinyrun trains a very small model for tests of the commands that read what a run leaves (bin/sample,
// bin/eval, bin/export): configs/tiny.toml shrunk to 8×8 single-channel images, channels (8, 16), T = 20, batch 4,
// three steps on random images, on the CPU.
package tinyrun

import (
	"context"
	"testing"

	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/configs"
	"github.com/ddpmgo/ddpm/cpu"
	"github.com/ddpmgo/ddpm/data"
	"github.com/ddpmgo/ddpm/rng"
	"github.com/ddpmgo/ddpm/train"
)

// Sets are the -set values of the tiny run; Run appends its extra ones after them.
var Sets = []string{"data.image_size=8", "model.block_channels=[8, 16]", "model.norm_groups=4", "diffusion.timesteps=20",
	"train.batch_size=4", "train.max_steps=3", "train.lr=1e-2", "sample.count=2", "sample.steps=2"}

// Images are n random 1×8×8 images, drawn from seed.
func Images(n int, seed uint64) *data.Images {
	m := &data.Images{C: 1, H: 8, W: 8, Pix: make([]uint8, n*64)}
	for i := range m.Pix {
		m.Pix[i] = uint8(rng.Uint32(seed, 1, uint64(i)))
	}
	return m
}

// Run trains the tiny model (with extra -set values) into a temporary folder on 8 random images and returns its
// config (run.dir set) and result.
func Run(t testing.TB, extra ...string) (config.Config, train.Result) {
	t.Helper()
	src, err := configs.Files.ReadFile("tiny.toml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("tiny.toml", src, append(append([]string(nil), Sets...), extra...))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Run.Dir = t.TempDir()
	res, err := train.Run(context.Background(), cfg, train.Options{Backend: cpu.New(), Dataset: Images(8, 5)})
	if err != nil {
		t.Fatal(err)
	}
	return cfg, res
}
