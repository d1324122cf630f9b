package memtrace

import (
	"testing"
	"time"

	"github.com/ddpmgo/ddpm/config"
)

func loadConfig(t *testing.T, name string, sets ...string) config.Config {
	t.Helper()
	cfg, err := config.Load("../../configs/"+name, sets)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestTraceBF16BelowFP32: celeba32's step at batch 64 holds less device memory at bf16 than at fp32 (packed conv
// operands and weights in bfloat16), traced without a device.
func TestTraceBF16BelowFP32(t *testing.T) {
	peak := map[string]int64{}
	for _, p := range []string{"fp32", "bf16"} {
		cfg := loadConfig(t, "celeba32.toml", "train.batch_size=64", "train.precision="+p)
		t0 := time.Now()
		s, err := DeviceStep(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("celeba32 batch 64 %s: peak %.1f MiB = buffers %.1f MiB + scratch %.1f MiB + packed weights %.1f MiB + %d B (%v)",
			p, mib(s.Peak), mib(s.Buffers()), mib(s.Scratch), mib(s.Packed), s.Fixed, time.Since(t0))
		if s.Precision != p || s.Batch != 64 {
			t.Errorf("%s: traced at %s, batch %d", p, s.Precision, s.Batch)
		}
		peak[p] = s.Peak
		peak[p+" own"] = s.Scratch + s.Packed
	}
	if peak["bf16"] >= peak["fp32"] || peak["bf16 own"] >= peak["fp32 own"] {
		t.Errorf("bf16 peak %d B (backend's own %d), fp32 %d B (%d): want bf16 lower in both", peak["bf16"], peak["bf16 own"],
			peak["fp32"], peak["fp32 own"])
	}
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }
