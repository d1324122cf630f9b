package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddpmgo/ddpm/diffusers"
	"github.com/ddpmgo/ddpm/train"
)

// TestSampleFromDiffusersFolder: the pipeline folder a run leaves, its unet folder, and the run's bare
// unet_ema.safetensors next to copies of the folder's config.json and scheduler_config.json all sample the very bytes the checkpoint's EMA
// weights do (same model, schedule, variance and clipping, same seed and flags). -raw is refused for a folder, and
// a folder without a scheduler config samples with the default schedule and says so.
func TestSampleFromDiffusersFolder(t *testing.T) {
	ck := trainedCheckpoint(t)
	runDir := filepath.Dir(filepath.Dir(ck))
	pipe := filepath.Join(runDir, train.PipelineDir)
	cfgJSON := read(t, filepath.Join(pipe, diffusers.UNetDir, diffusers.ConfigFile))
	if err := os.WriteFile(filepath.Join(runDir, diffusers.ConfigFile), cfgJSON, 0o644); err != nil {
		t.Fatal(err)
	}
	sched := read(t, filepath.Join(pipe, diffusers.SchedulerDir, diffusers.SchedulerFile))
	if err := os.WriteFile(filepath.Join(runDir, diffusers.SchedulerFile), sched, 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	flags := []string{"-sampler", "ddim", "-steps", "4", "-eta", "0.5", "-seed", "3", "-n", "3"}
	grid := func(name, model string) []byte {
		t.Helper()
		out := filepath.Join(dir, name)
		if code, stderr := sample(t, append([]string{"-ckpt", model, "-npy", out}, flags...)...); code != 0 {
			t.Fatalf("-ckpt %s: exit %d: %s", model, code, stderr)
		}
		return read(t, out)
	}
	want := grid("ckpt.npy", ck)
	for i, m := range []string{pipe, filepath.Join(pipe, diffusers.UNetDir), filepath.Join(runDir, train.EMAWeights)} {
		if got := grid(string(rune('a'+i))+".npy", m); !bytes.Equal(got, want) {
			t.Errorf("-ckpt %s: samples differ from the checkpoint's", m)
		}
	}
	if code, stderr := sample(t, "-ckpt", pipe, "-raw"); code != 2 || !strings.Contains(stderr, "-raw") {
		t.Errorf("-raw with a folder: exit %d, %q", code, stderr)
	}
	lone := filepath.Join(t.TempDir(), train.EMAWeights)
	os.WriteFile(lone, read(t, filepath.Join(runDir, train.EMAWeights)), 0o644)
	if code, stderr := sample(t, "-ckpt", lone); code != 1 || !strings.Contains(stderr, "not a trainer checkpoint") ||
		!strings.Contains(stderr, "config.json next to them") {
		t.Errorf("weights without a config.json: exit %d, %q", code, stderr)
	}
	bare := t.TempDir()
	os.WriteFile(filepath.Join(bare, diffusers.ConfigFile), cfgJSON, 0o644)
	os.WriteFile(filepath.Join(bare, diffusers.WeightsFile), read(t, filepath.Join(pipe, diffusers.UNetDir, diffusers.WeightsFile)), 0o644)
	code, stderr := sample(t, "-ckpt", bare, "-sampler", "ddim", "-steps", "2", "-n", "1", "-npy", filepath.Join(dir, "bare.npy"))
	if code != 0 || !strings.Contains(stderr, "no scheduler config") {
		t.Errorf("folder without a scheduler: exit %d, %q", code, stderr)
	}
}
