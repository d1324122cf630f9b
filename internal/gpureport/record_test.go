package gpureport

import (
	"os"
	"strings"
	"testing"

	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/configs"
)

// The dry driver's trace of a tiny.toml step is the launch golden that train records over the emulator (same
// overrides as train's parityConfig, 2048 images), so the celeba32 traces of the report are the steps a GPU runs.
func TestRecordStepMatchesTheTinyGolden(t *testing.T) {
	src, err := configs.Files.ReadFile("tiny.toml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("tiny.toml", src, []string{"train.max_steps=2", "train.log_every=1",
		"train.checkpoint_every=0", "data.flip=true", "sample.count=1", "sample.steps=1"})
	if err != nil {
		t.Fatal(err)
	}
	ls, err := RecordStep(cfg, Precisions[0], 2048)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("../../train/testdata/launches_tiny_step.golden")
	if err != nil {
		t.Fatal(err)
	}
	wl := strings.Split(strings.TrimSuffix(string(want), "\n"), "\n")
	if len(ls) != len(wl) {
		t.Errorf("%d launches and fills traced, the golden has %d", len(ls), len(wl))
	}
	for i := 0; i < min(len(ls), len(wl)); i++ {
		if g := GoldenLine(ls[i]); g != wl[i] {
			t.Fatalf("launch %d:\n got  %s\n want %s", i+1, g, wl[i])
		}
	}
}
