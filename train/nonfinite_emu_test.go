//go:build !cuda

package train

import (
	"context"
	"math"
	"testing"

	"go.uber.org/zap"

	"github.com/ddpmgo/ddpm/backend"
	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/cpu"
	"github.com/ddpmgo/ddpm/ops"
)

// emuBackend opens the CUDA kernels over the emulator for the length of the test.
func emuBackend(t *testing.T) Options {
	t.Helper()
	be, closeBe, err := backend.Open("emu", config.Device{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { closeBe() })
	return Options{Backend: be, Dataset: synthetic(16)}
}

// TestEmuNonFiniteDevicePath poisons a step of the device path (clipping, NaN check and loss sums on the device,
// read every train.log_every steps: cuda/optim.go) through the test hook of runWith. Stop mode: the run stops at the next read
// with an error naming the step that went non-finite (not the step of the read) and the poisoned tensor, the
// weights on the device are still those of the last good checkpoint (no update after the bad step), and that
// checkpoint is the latest. skip_nonfinite: the poisoned steps are skipped and counted, and the metrics lines
// (window means over several steps) and the checkpoint's counters match the CPU backend's host path.
func TestEmuNonFiniteDevicePath(t *testing.T) {
	t.Parallel() // with the other emulator tests (TestEmuStepParityTiny): each emulator stream keeps about one core busy
	small := []string{"sample.count=1", "sample.steps=1"}
	table := tinyTable(t, testConfig(t, t.TempDir()))
	victim := table[len(table)/2].Name
	for _, tc := range []struct {
		name   string
		target string
		value  float32
		want   string
	}{
		{"gradient NaN", victim, float32(math.NaN()), "gradient of " + victim},
		{"loss Inf", "loss", float32(math.Inf(1)), "only the loss"},
	} {
		t.Run("stop/"+tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			// Reads at steps 1, 2 (checkpoint), 4 (log and checkpoint): step 3 is poisoned, noticed at 4.
			cfg := testConfig(t, dir, append(small, "train.max_steps=6", "train.log_every=4", "train.checkpoint_every=2")...)
			opt := emuBackend(t)
			tr, err := setup(cfg, opt, zap.NewNop(), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer tr.close()
			if _, host := tr.ctl.(*ops.HostStepControl); host {
				t.Fatal("the emulator backend did not end the step on the device")
			}
			tr.inject = func(step int) (string, float32) {
				if step == 3 {
					return tc.target, tc.value
				}
				return "", 0
			}
			_, err = tr.loop(context.Background())
			st := checkStoppedAtStep3(t, err, dir, table, tc.want, "noticed at step 4")
			// Steps 3 and 4 ran on the device, but the skip flag kept AdamW and the EMA from touching anything.
			now := tr.hostState()
			for _, b := range []struct {
				what      string
				got, want []float32
			}{{"weights", now.Params, st.Params}, {"EMA", now.EMA, st.EMA}, {"AdamW m", now.AdamM, st.AdamM}, {"AdamW v", now.AdamV, st.AdamV}} {
				for i := range b.want {
					if math.Float32bits(b.got[i]) != math.Float32bits(b.want[i]) {
						t.Fatalf("%s element %d changed after the bad step: %v, checkpoint of step 2 %v", b.what, i, b.got[i], b.want[i])
					}
				}
			}
		})
	}

	t.Run("skip", func(t *testing.T) {
		t.Parallel()
		inject := func(step int) (string, float32) {
			if step == 2 || step == 4 {
				return victim, float32(math.NaN())
			}
			return "", 0
		}
		runOn := func(opt Options) (string, Result) {
			dir := t.TempDir()
			// Windows [1], [2 3], [4 5]: steps 2 and 4 are poisoned, each the first step of a window.
			cfg := testConfig(t, dir, append(small, "train.max_steps=5", "train.log_every=3", "train.skip_nonfinite=true")...)
			res, err := runWith(context.Background(), cfg, opt, inject)
			if err != nil {
				t.Fatal(err)
			}
			return dir, res
		}
		cpuDir, resCPU := runOn(Options{Backend: cpu.New(), Dataset: synthetic(16)})
		emuDir, resEmu := runOn(emuBackend(t))
		if resEmu.Step != 5 || resEmu.Skipped != 2 || resCPU.Skipped != 2 {
			t.Fatalf("emu: step %d skipped %d (cpu skipped %d); want 5 and 2", resEmu.Step, resEmu.Skipped, resCPU.Skipped)
		}
		mc, me := readMetrics(t, cpuDir), readMetrics(t, emuDir)
		if len(mc) != len(me) || len(me) != 3 { // steps 1, 3, 5 (the last)
			t.Fatalf("metrics lines: cpu %d, emu %d; want 3", len(mc), len(me))
		}
		for i := range mc {
			c, e := mc[i], me[i]
			if c.Step != e.Step || c.Skipped != e.Skipped {
				t.Errorf("line %d: emu step %d skipped %d, cpu step %d skipped %d", i, e.Step, e.Skipped, c.Step, c.Skipped)
			}
			// Steps 3 and 5 follow a skipped step of their window, before the host has read it: the device takes
			// the skipped steps off the AdamW counter (step_stats_f32), else their bias corrections (and so every
			// later loss) would differ by far more than this bound.
			if err := relErr(e.Loss, c.Loss); !(err <= parityLossTol) {
				t.Errorf("line %d (step %d) loss: emu %.7g, cpu %.7g: relative error %.3g", i, c.Step, e.Loss, c.Loss, err)
			}
			if err := relErr(e.GradNorm, c.GradNorm); !(err <= parityLossTol) {
				t.Errorf("line %d (step %d) gradient norm: emu %.7g, cpu %.7g: relative error %.3g", i, c.Step, e.GradNorm, c.GradNorm, err)
			}
		}
		ck := readTensors(t, resEmu.Checkpoint)
		if ck.Metadata["adam_step"] != "3" || ck.Metadata["skipped_steps"] != "2" {
			t.Errorf("emu checkpoint metadata %v; want adam_step 3, skipped_steps 2", ck.Metadata)
		}
	})
}
