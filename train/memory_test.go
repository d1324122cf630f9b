package train

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/cpu"
)

// lineTracer is a DeviceTracer whose peak is fixed + per·B, noting the batches it traced.
type lineTracer struct {
	fixed, per int64
	batches    []int
}

func (l *lineTracer) trace(cfg config.Config) (DeviceStep, error) {
	b := cfg.Train.BatchSize
	l.batches = append(l.batches, b)
	return DeviceStep{Batch: b, Precision: "bf16", Peak: l.fixed + l.per*int64(b), Scratch: 100, Packed: 20, Fixed: 3}, nil
}

// TestMemoryTrace: a traced device step replaces the formula: Step is the traced peak at the run's batch, fit
// follows the line through the two traces, and String breaks the peak down; a hopeless batch is not traced.
func TestMemoryTrace(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), "train.batch_size=16")
	dev := withDeviceMemory{cpu.New(), 1 << 40}
	m, err := EstimateMemory(cfg, dev, 16)
	if err != nil {
		t.Fatal(err)
	}
	formula := m.Step()
	lt := &lineTracer{fixed: 5000, per: 300}
	if err := m.Trace(cfg, lt.trace); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(lt.batches) != "[16 8]" || m.Step() != 5000+300*16 || m.Fixed != 5000 || m.PerImage != 300 ||
		m.Formula != formula || m.TracedAt != 8 {
		t.Errorf("traced at %v: %+v, step %d; want batches [16 8], step %d, formula %d", lt.batches, m, m.Step(), 5000+300*16, formula)
	}
	// 5000 + 300·B + resident ≤ avail: B = 100 fits in exactly 35000 + resident bytes, 101 not.
	if k := m.fit(35000+m.Resident, m.Resident); k != 100 {
		t.Errorf("fit: %d, want 100", k)
	}
	s := m.String()
	for _, want := range []string{"device step traced at bf16", "peak 0.0 MiB", "scratch 0.0 MiB, packed conv weights 0.0 MiB",
		"traces at batch 16 and 8", "model.Summary's formula"} {
		if !strings.Contains(s, want) {
			t.Errorf("String lacks %q:\n%s", want, s)
		}
	}

	// Batch 1: the second trace is at 2.
	cfg1 := testConfig(t, t.TempDir(), "train.batch_size=1")
	m1, _ := EstimateMemory(cfg1, dev, 16)
	lt = &lineTracer{fixed: 5000, per: 300}
	if err := m1.Trace(cfg1, lt.trace); err != nil || fmt.Sprint(lt.batches) != "[1 2]" || m1.PerImage != 300 || m1.Step() != 5300 {
		t.Errorf("batch 1: %v, traced %v, %+v", err, lt.batches, m1)
	}

	// A batch whose formula is far beyond the device is not traced; the formula stays and String says why.
	small := withDeviceMemory{cpu.New(), 1000}
	m2, _ := EstimateMemory(cfg, small, 16)
	lt = &lineTracer{fixed: 1, per: 1}
	if err := m2.Trace(cfg, lt.trace); err == nil || len(lt.batches) != 0 || m2.Traced != nil || m2.Step() != formula {
		t.Errorf("hopeless batch: %v, traced %v, %+v", err, lt.batches, m2)
	}
	if s := m2.String(); !strings.Contains(s, "from model.Summary's formula") || !strings.Contains(s, "not traced") {
		t.Errorf("String of an untraced estimate:\n%s", s)
	}
}

// TestRunChecksTracedStep: with Options.DeviceTrace the check before training uses the traced step: a run the
// formula lets through is refused when the trace needs more than the device has, with the batch that fits.
func TestRunChecksTracedStep(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), "train.batch_size=16", "train.max_steps=1")
	m, _ := EstimateMemory(cfg, withDeviceMemory{cpu.New(), 1 << 40}, 16)
	free := 2 * (m.Step() + m.Resident) // the formula fits
	dev := withDeviceMemory{cpu.New(), free}
	lt := &lineTracer{per: free / 4} // 4·free at batch 16, 2·free at 8: batch 3 fits
	_, err := Run(context.Background(), cfg, Options{Backend: dev, Dataset: synthetic(16), DeviceTrace: lt.trace})
	if err == nil || !strings.Contains(err.Error(), "batch 16 needs about") || !strings.Contains(err.Error(), "train.batch_size = 3 fits") {
		t.Fatalf("traced step over the device: %v", err)
	}
	if fmt.Sprint(lt.batches) != "[16 8]" {
		t.Errorf("traced at %v, want [16 8]", lt.batches)
	}
	// Without a trace the same run passes the check (it trains a step).
	if _, err := Run(context.Background(), cfg, Options{Backend: dev, Dataset: synthetic(16)}); err != nil {
		t.Errorf("formula check: %v", err)
	}
}
