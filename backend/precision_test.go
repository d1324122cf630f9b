package backend

import (
	"strings"
	"testing"

	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/cpu"
	"github.com/ddpmgo/ddpm/ops"
)

func precisionConfig(t *testing.T, sets ...string) config.Config {
	t.Helper()
	cfg, err := config.Parse("x.toml", nil, sets)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestSetPrecisionCPU: fp32 by default; tf32 refused on the CPU, except as the older device.tensor_cores (which the
// CPU always ignored); bf16 set where the CPU has the instructions, else refused naming them.
func TestSetPrecisionCPU(t *testing.T) {
	be, _, err := Open("cpu", config.Device{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ps := be.(ops.PrecisionSetter)
	if err := SetPrecision(be, precisionConfig(t), nil); err != nil || ps.Precision() != ops.FP32 {
		t.Errorf("fp32: %v, precision %q", err, ps.Precision())
	}
	if err := SetPrecision(be, precisionConfig(t, "train.precision=tf32"), nil); err == nil || !strings.Contains(err.Error(), "GPU") {
		t.Errorf("tf32 on the CPU: %v, want a refusal naming the GPU", err)
	}
	if err := SetPrecision(be, precisionConfig(t, "device.tensor_cores=true"), nil); err != nil || ps.Precision() != ops.FP32 {
		t.Errorf("device.tensor_cores on the CPU: %v, precision %q; want fp32 as before", err, ps.Precision())
	}
	err = SetPrecision(be, precisionConfig(t, "train.precision=bf16"), nil)
	if probe := cpu.New().SetPrecision(ops.BF16); probe != nil {
		if err == nil || !strings.Contains(err.Error(), "bf16") {
			t.Errorf("bf16 on a CPU without it: %v, want a refusal", err)
		}
		t.Logf("this CPU cannot run bf16, refused: %v", err)
		return
	}
	if err != nil || ps.Precision() != ops.BF16 {
		t.Errorf("bf16: %v, precision %q", err, ps.Precision())
	}
}

// TestSetPrecisionEmu: the emulated GPU runs tf32 and bf16 (its tensor-core kernels).
func TestSetPrecisionEmu(t *testing.T) {
	be, closeBe, err := Open("emu", config.Device{}, nil)
	if err != nil {
		t.Skipf("no emulator in this build: %v", err)
	}
	defer closeBe()
	if err := SetPrecision(be, precisionConfig(t, "train.precision=tf32"), nil); err != nil {
		t.Errorf("tf32 on emu: %v", err)
	}
	if tc, ok := be.(interface{ TensorCores() bool }); ok && !tc.TensorCores() {
		t.Error("tf32 on emu: the TF32 kernels are not selected")
	}
	if err := SetPrecision(be, precisionConfig(t, "train.precision=bf16"), nil); err != nil {
		t.Errorf("bf16 on emu: %v", err)
	}
	if ps := be.(ops.PrecisionSetter); ps.Precision() != ops.BF16 {
		t.Errorf("bf16 on emu: precision %q", ps.Precision())
	}
}

// TestSetPrecisionAuto: auto is bf16 where the CPU runs it, fp32 where it does not (never an error on the CPU).
func TestSetPrecisionAuto(t *testing.T) {
	be := cpu.New()
	if err := SetPrecision(be, precisionConfig(t, "train.precision=auto"), nil); err != nil {
		t.Fatal(err)
	}
	want := ops.BF16
	if cpu.New().SetPrecision(ops.BF16) != nil {
		want = ops.FP32
	}
	if be.Precision() != want {
		t.Errorf("auto: precision %q, want %q", be.Precision(), want)
	}
}
