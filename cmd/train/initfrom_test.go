package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/cpu"
	"github.com/ddpmgo/ddpm/diffusers"
	"github.com/ddpmgo/ddpm/model"
)

// TestInitFromFlag: -init-from puts the folder's model and schedule into the resolved config (-print-config), and a
// -set that contradicts the folder is a usage error naming the -set. (The fine-tuning run itself: package train's
// TestInitFrom.)
func TestInitFromFlag(t *testing.T) {
	c := config.Default()
	c.Data.Channels, c.Data.ImageSize = 1, 32
	c.Model = config.Model{BlockChannels: []int{8, 16}, LayersPerBlock: 1, MidAttention: true, AttentionResolutions: []int{},
		DownAttentionResolutions: []int{16}, UpAttentionResolutions: []int{}, AttentionHeadDim: 0, NormGroups: 4, NormEps: 1e-6,
		FlipSinToCos: false, FreqShift: 1, DownsamplePadding: 0}
	c.Diffusion.Timesteps, c.Diffusion.BetaEnd = 200, 0.03
	u, err := model.New(cpu.New(), c.Model, 1, 32, 1)
	if err != nil {
		t.Fatal(err)
	}
	u.Init(1)
	w := make([]float32, u.NumParams())
	cpu.New().Download(w, u.Params())
	dir := filepath.Join(t.TempDir(), "pretrained")
	if err := diffusers.Write(dir, diffusers.Pipeline{Config: c, Table: u.Table(), Weights: w}); err != nil {
		t.Fatal(err)
	}
	tiny := filepath.Join("..", "..", "configs", "tiny.toml")
	exe := func(args ...string) (int, string, string) {
		var o, e bytes.Buffer
		code := run(context.Background(), args, &o, &e)
		return code, o.String(), e.String()
	}
	code, out, stderr := exe("-c", tiny, "-init-from", dir, "-set", "train.lr=5e-5", "-print-config")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	got, err := config.Parse("printed", []byte(out), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Model.FreqShift != 1 || got.Model.FlipSinToCos || got.Model.DownsamplePadding != 0 || got.Data.ImageSize != 32 ||
		got.Diffusion.Timesteps != 200 || got.Diffusion.BetaEnd != 0.03 || got.Train.LR != 5e-5 {
		t.Errorf("-print-config with -init-from:\n%s", out)
	}
	code, _, stderr = exe("-c", tiny, "-init-from", dir, "-set", "diffusion.timesteps=100", "-print-config")
	if code != 2 || !strings.Contains(stderr, "-set diffusion.timesteps=100 contradicts") || !strings.Contains(stderr, "diffusion.timesteps = 200") {
		t.Errorf("contradicting -set: exit %d, %q", code, stderr)
	}
	code, _, stderr = exe("-c", tiny, "-init-from", filepath.Join(t.TempDir(), "missing"))
	if code != 2 || !strings.Contains(stderr, "missing") {
		t.Errorf("missing folder: exit %d, %q", code, stderr)
	}
}
