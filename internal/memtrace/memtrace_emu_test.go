//go:build !cuda

package memtrace

import (
	"testing"
	"time"

	"github.com/ddpmgo/ddpm/cuda"
	"github.com/ddpmgo/ddpm/ops"
	"github.com/ddpmgo/ddpm/train"
)

// TestTraceMatchesEmulator: the dry trace's peak is the peak of the device memory the same set-up and two steps
// actually hold when the kernels run (the emulator, whose allocations are the GPU backend's): the same allocation
// sequence, so the same bytes.
func TestTraceMatchesEmulator(t *testing.T) {
	// tiny.toml at its batch 16 takes the emulator ~25 s on 2 cores; with -short, batch 4 (~1/4 of it).
	var sets []string
	if testing.Short() {
		sets = append(sets, "train.batch_size=4")
		t.Log("-short: tiny.toml at batch 4 instead of 16 (the emulator runs the kernels: ~25 s at 16 on 2 cores)")
	}
	cfg := loadConfig(t, "tiny.toml", sets...)
	t0 := time.Now()
	dry, err := DeviceStep(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tDry := time.Since(t0)

	e := cuda.NewEmulator(cuda.EmuOptions{Workers: 2})
	defer e.Close()
	be, err := cuda.NewBackend(e)
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	if err := be.SetPrecision(ops.FP32); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	emu, err := train.TracePeak(cfg, be, e.MemPeak)
	if err != nil {
		t.Fatal(err)
	}
	own := be.OwnMemory()
	t.Logf("tiny fp32 batch %d: dry peak %d B (%v), emulated peak %d B (%v); backend's own: dry %+v, emulated %+v",
		cfg.Train.BatchSize, dry.Peak, tDry, emu, time.Since(t0), dry, own)
	if dry.Peak != emu {
		t.Errorf("dry peak %d B, emulated %d B: the same allocations should give the same peak", dry.Peak, emu)
	}
	if dry.Precision != "fp32" || dry.Scratch != own.Scratch || dry.Packed != own.Packed || dry.Fixed != own.Fixed {
		t.Errorf("backend's own memory: dry %+v (precision %s), emulated %+v", dry, dry.Precision, own)
	}
	if dry.Scratch <= 0 || dry.Packed <= 0 || dry.Buffers() <= 0 {
		t.Errorf("trace %+v: scratch, packed weights and buffers should all be counted", dry)
	}
}
