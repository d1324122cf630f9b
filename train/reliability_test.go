package train

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ddpmgo/ddpm/checkpoint"
	"github.com/ddpmgo/ddpm/cpu"
	"github.com/ddpmgo/ddpm/internal/atomicfile"
	"github.com/ddpmgo/ddpm/internal/faultio"
	"github.com/ddpmgo/ddpm/model"
	"github.com/ddpmgo/ddpm/ops"
)

// failWrites makes every atomic write of a path ending in suffix fail with ENOSPC (for the rest of the test).
func failWrites(t *testing.T, suffix string) {
	t.Helper()
	atomicfile.Fault = func(path string, w io.Writer) io.Writer {
		if strings.HasSuffix(path, suffix) {
			return &faultio.Writer{W: w, N: 100, Err: &os.PathError{Op: "write", Path: "injected", Err: syscall.ENOSPC}}
		}
		return w
	}
	t.Cleanup(func() { atomicfile.Fault = nil })
}

// noTemps fails if a temporary file of writeAtomic is left in dir.
func noTemps(t *testing.T, dirs ...string) {
	t.Helper()
	for _, dir := range dirs {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if strings.Contains(e.Name(), atomicfile.TmpMarker) {
				t.Errorf("temporary file %s left in %s", e.Name(), dir)
			}
		}
	}
}

// TestWriteErrorPolicy: a checkpoint, sample grid or loss plot write that fails (ENOSPC, injected) stops the run
// with an error naming the file and the last good checkpoint under train.on_write_error = "stop", and is counted
// and skipped under "continue"; either way no partial file is left and the previous checkpoint still loads.
func TestWriteErrorPolicy(t *testing.T) {
	for _, tc := range []struct {
		what, suffix string
		lastGood     int // the latest checkpoint's step after a stop
		missing      []string
	}{
		{"checkpoint", checkpoint.Name(2), 1, []string{"checkpoints/" + checkpoint.Name(2)}},
		{"samples", "samples/step-00000002.png", 2, []string{"samples/step-00000002.png"}},
		{"loss plot", LossPlot, 1, []string{LossPlot}},
	} {
		for _, policy := range []string{"stop", "continue"} {
			t.Run(tc.what+"/"+policy, func(t *testing.T) {
				dir := t.TempDir()
				cfg := testConfig(t, dir, "train.max_steps=4", "train.checkpoint_every=1", "train.sample_every=2",
					"train.keep_checkpoints=10", "train.log_every=1", "train.on_write_error="+policy)
				failWrites(t, tc.suffix)
				res, err := run(t, context.Background(), cfg, synthetic(16), false)
				ckdir := checkpoint.Dir(dir)
				noTemps(t, dir, ckdir, filepath.Join(dir, SamplesDir))
				for _, m := range tc.missing {
					if _, err := os.Stat(filepath.Join(dir, m)); err == nil {
						t.Errorf("%s exists after its write failed", m)
					}
				}
				if policy == "stop" {
					if err == nil || !strings.Contains(err.Error(), "no space left on device") || !strings.Contains(err.Error(), tc.suffix) ||
						!strings.Contains(err.Error(), "on_write_error") {
						t.Fatalf("want an error naming %s, ENOSPC and the policy; got %v", tc.suffix, err)
					}
					good := filepath.Join(ckdir, checkpoint.Name(tc.lastGood))
					if !strings.Contains(err.Error(), "last good checkpoint is "+good) {
						t.Errorf("error does not name the last good checkpoint %s: %v", good, err)
					}
					st, err := checkpoint.Read(filepath.Join(ckdir, checkpoint.LatestName), tinyTable(t, cfg))
					if err != nil || st.Step != tc.lastGood {
						t.Fatalf("latest after the failure: %v %v, want step %d", st, err, tc.lastGood)
					}
					return
				}
				if err != nil || res.Step != 4 {
					t.Fatalf("continue: %v at step %d", err, res.Step)
				}
				st, err := checkpoint.Read(filepath.Join(ckdir, checkpoint.LatestName), tinyTable(t, cfg))
				if err != nil || st.Step != 4 {
					t.Fatalf("latest: %v %v", st, err)
				}
				ms := readMetrics(t, dir)
				if last := ms[len(ms)-1]; last.WriteErrors < 1 || ms[0].WriteErrors != 0 {
					t.Errorf("write_errors in metrics: first %d, last %d", ms[0].WriteErrors, last.WriteErrors)
				}
			})
		}
	}
	// The final checkpoint is never skipped: its failure is an error even under "continue".
	dir := t.TempDir()
	cfg := testConfig(t, dir, "train.max_steps=3", "train.checkpoint_every=2", "train.on_write_error=continue")
	failWrites(t, checkpoint.Name(3))
	_, err := run(t, context.Background(), cfg, synthetic(16), false)
	if err == nil || !strings.Contains(err.Error(), "final checkpoint") || !strings.Contains(err.Error(), checkpoint.Name(2)) {
		t.Fatalf("failed final checkpoint under continue: %v", err)
	}
}

// TestNonFiniteInjected poisons one gradient element (and, separately, the loss) through the test hook of runWith: the run
// stops at that step naming the parameter, keeps the last good checkpoint, and with train.skip_nonfinite skips and
// counts the poisoned steps in metrics.jsonl.
func TestNonFiniteInjected(t *testing.T) {
	base := testConfig(t, t.TempDir())
	table := tinyTable(t, base)
	victim := table[len(table)/2].Name
	for _, tc := range []struct {
		name   string
		target string
		value  float32
		want   string
	}{
		{"gradient NaN", victim, float32(math.NaN()), "gradient of " + victim},
		{"gradient +Inf", victim, float32(math.Inf(1)), "gradient of " + victim},
		{"loss Inf", "loss", float32(math.Inf(-1)), "only the loss"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := testConfig(t, dir, "train.max_steps=6", "train.checkpoint_every=1")
			inject := func(step int) (string, float32) {
				if step == 3 {
					return tc.target, tc.value
				}
				return "", 0
			}
			_, err := runWith(context.Background(), cfg, Options{Backend: cpu.New(), Dataset: synthetic(16)}, inject)
			checkStoppedAtStep3(t, err, dir, table, tc.want)
		})
	}
	// skip_nonfinite: steps 2 and 4 poisoned, 6 steps run, 2 skipped and counted.
	dir := t.TempDir()
	cfg := testConfig(t, dir, "train.max_steps=6", "train.log_every=1", "train.skip_nonfinite=true")
	inject := func(step int) (string, float32) {
		if step == 2 || step == 4 {
			return victim, float32(math.NaN())
		}
		return "", 0
	}
	res, err := runWith(context.Background(), cfg, Options{Backend: cpu.New(), Dataset: synthetic(16)}, inject)
	if err != nil || res.Step != 6 || res.Skipped != 2 {
		t.Fatalf("skip: %v, step %d, skipped %d; want 6 and 2", err, res.Step, res.Skipped)
	}
	ms := readMetrics(t, dir)
	if last := ms[len(ms)-1]; last.Step != 6 || last.Skipped != 2 {
		t.Errorf("last metrics line %+v: want step 6 skipped 2", last)
	}
	ck := readTensors(t, res.Checkpoint)
	if ck.Metadata["adam_step"] != "4" || ck.Metadata["skipped_steps"] != "2" {
		t.Errorf("checkpoint metadata %v", ck.Metadata)
	}
	// An unknown name is a test bug, reported as such.
	_, err = runWith(context.Background(), testConfig(t, t.TempDir(), "train.max_steps=1"),
		Options{Backend: cpu.New(), Dataset: synthetic(16)}, func(int) (string, float32) { return "no.such", 0 })
	if err == nil || !strings.Contains(err.Error(), "no.such") {
		t.Errorf("unknown Inject target: %v", err)
	}
}

// withDeviceMemory is the CPU backend posing as a device that reports free bytes.
type withDeviceMemory struct {
	ops.Backend
	free int64
}

func (w withDeviceMemory) MemInfo() (int64, int64, error) { return w.free, 2 * w.free, nil }

func TestMemoryCheck(t *testing.T) {
	// By hand: step(B) = 100 + 10·B, data 50, 1000 available: B = 85 needs 100 + 850 + 50 = 1000 (fits), 86 not.
	m := Memory{Batch: 100, Fixed: 100, PerImage: 10, Data: 50, HostAvail: 1000, DeviceAvail: -1}
	err := m.Check()
	if err == nil || !strings.Contains(err.Error(), "train.batch_size = 85 fits") {
		t.Fatalf("Check: %v", err)
	}
	m.Batch = 85
	if err := m.Check(); err != nil {
		t.Errorf("batch 85 should fit: %v", err)
	}
	m.Batch, m.HostAvail = 86, -1
	if err := m.Check(); err != nil {
		t.Errorf("unknown availability should not fail: %v", err)
	}
	m.HostAvail, m.Fixed = 1000, 990
	if err := m.Check(); err == nil || !strings.Contains(err.Error(), "not even batch 1") {
		t.Errorf("model alone too big: %v", err)
	}

	// The estimate is model.Summary's plus the CPU backend's operand copies, affine in the batch.
	cfg := testConfig(t, t.TempDir(), "train.batch_size=7")
	est, err := EstimateMemory(cfg, cpu.New(), 16)
	if err != nil {
		t.Fatal(err)
	}
	_, _, want := model.Summary(cfg.Model, 1, 8, 7)
	_, _, at3 := model.Summary(cfg.Model, 1, 8, 3)
	copies := 20 * int64(model.LargestTensor(cfg.Model, 1, 8)) // fp32: x, y, dy twice, dx in float32
	if est.Copies != copies || est.Step() != want+7*copies || est.Fixed+3*est.PerImage != at3+3*copies || est.Data != 16*64 || est.Device {
		t.Errorf("estimate %+v: step %d want %d; at 3: %d want %d", est, est.Step(), want+7*copies, est.Fixed+3*est.PerImage, at3+3*copies)
	}
	// At bf16 the copies of x and dy are half as large, and backward-weights' copies of narrow x and dy (5/4 of a
	// bf16 tensor each at most) come in.
	cfg.Train.Precision = "bf16"
	if e16, _ := EstimateMemory(cfg, cpu.New(), 16); e16.Copies != 19*copies/20 || e16.Step() >= est.Step() {
		t.Errorf("bf16 estimate %+v: copies %d, want %d, and a step below fp32's %d", e16, e16.Copies, 19*copies/20, est.Step())
	}
	// A backend at bf16 keeps convolution inputs in bf16 (ops.ConvInputKeeper): the estimate counts them at their kept
	// lengths, as -dry-run's does without a backend (cpu.HostKeptLens, through backend.HostKeptLen).
	if be := cpu.New(); be.SetPrecision(ops.BF16) == nil {
		ek, _ := EstimateMemory(cfg, be, 16)
		_, _, kw := model.SummaryKept(cfg.Model, 1, 8, 7, be.KeptLen)
		if ek.Kept <= 0 || ek.Step() != kw+7*ek.Copies || ek.Step() >= est.Step()-7*ek.Kept {
			t.Errorf("bf16 estimate with kept inputs %+v: step %d, want %d (%d per image kept)", ek, ek.Step(), kw+7*ek.Copies, ek.Kept)
		}
		if dry, _ := hostEstimate(cfg, 16, cpu.HostKeptLens("bf16")); dry.Step() != ek.Step() || dry.Kept != ek.Kept {
			t.Errorf("-dry-run's bf16 estimate %+v, the backend's %+v", dry, ek)
		}
	} else {
		t.Logf("bf16 kept inputs not checked: %v", be.SetPrecision(ops.BF16))
	}

	// A batch no machine holds fails in Run before anything is allocated or written, with the numbers.
	dir := filepath.Join(t.TempDir(), "run")
	t0 := time.Now()
	_, err = run(t, context.Background(), testConfig(t, dir, "train.batch_size=67108864", "train.max_steps=1"), synthetic(16), false)
	if err == nil || !strings.Contains(err.Error(), "batch 67108864 needs about") || !strings.Contains(err.Error(), "MemAvailable") ||
		!strings.Contains(err.Error(), "train.batch_size = ") {
		t.Fatalf("huge batch: %v", err)
	}
	if _, serr := os.Stat(dir); serr == nil || time.Since(t0) > 5*time.Second {
		t.Errorf("the refused run wrote %s or took %v", dir, time.Since(t0))
	}
	var k int
	if _, serr := fmt.Sscanf(err.Error()[strings.Index(err.Error(), "train.batch_size = "):], "train.batch_size = %d", &k); serr != nil ||
		k < 1 || k >= 67108864 {
		t.Errorf("suggested batch %d (%v)", k, serr)
	}

	// A backend reporting device memory is checked against it.
	dev := withDeviceMemory{cpu.New(), 1 << 20}
	_, err = Run(context.Background(), testConfig(t, t.TempDir(), "train.batch_size=16", "train.max_steps=1"),
		Options{Backend: dev, Dataset: synthetic(16)})
	if err == nil || !strings.Contains(err.Error(), "free memory on "+dev.Name()) {
		t.Fatalf("device memory: %v", err)
	}
}

// TestStaleTempsRemovedOnResume: temporaries of writes cut short by a crash are removed when the run continues;
// other files are left alone.
func TestStaleTempsRemovedOnResume(t *testing.T) {
	dir := t.TempDir()
	mustRun(t, testConfig(t, dir, "train.max_steps=1"), synthetic(8), false)
	ckdir := checkpoint.Dir(dir)
	stale := []string{filepath.Join(ckdir, "."+checkpoint.Name(2)+atomicfile.TmpMarker+"123"), atomicfile.TempName(ckdir, checkpoint.LatestName, "link"),
		filepath.Join(dir, "."+LossPlot+atomicfile.TmpMarker+"9")}
	keep := []string{filepath.Join(dir, ".notes"), filepath.Join(ckdir, "mine.txt")}
	for _, p := range append(stale, keep...) {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mustRun(t, testConfig(t, dir, "train.max_steps=2"), synthetic(8), true)
	for _, p := range stale {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("stale %s survived the resume", p)
		}
	}
	for _, p := range keep {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s was removed", p)
		}
	}
}

// TestResumeAfterTheFinalCheckpointWritesTheOutputs: a process killed after its final checkpoint but before the
// final sample grid and EMA export leaves them missing; resuming the spent run writes them (and only then says
// there is nothing to do).
func TestResumeAfterTheFinalCheckpointWritesTheOutputs(t *testing.T) {
	dir := t.TempDir()
	cfg := testConfig(t, dir, "train.max_steps=2")
	mustRun(t, cfg, synthetic(8), false)
	ema := filepath.Join(dir, EMAWeights)
	want, err := os.ReadFile(ema)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(ema)
	os.RemoveAll(filepath.Join(dir, SamplesDir))
	res := mustRun(t, cfg, synthetic(8), true)
	got, err := os.ReadFile(ema)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("EMA export after the resume: %v (equal to the lost one: %v)", err, bytes.Equal(got, want))
	}
	if res.Samples == "" {
		t.Error("no sample grid written")
	}
	if _, err := os.Stat(filepath.Join(dir, SamplesDir, "step-00000002.png")); err != nil {
		t.Error(err)
	}
}

// checkStoppedAtStep3 checks a run that met a non-finite value at step 3 with checkpoints every step: the error is
// ErrNonFinite, names step 3, the tensor (want) and the last good checkpoint (step 2), which is still the latest and
// loads, and is returned. extra are further texts the error must hold (the device path's "noticed at step N").
func checkStoppedAtStep3(t *testing.T, err error, dir string, table []model.Param, want string, extra ...string) *checkpoint.State {
	t.Helper()
	if !errors.Is(err, ErrNonFinite) || !strings.Contains(err.Error(), "step 3:") || !strings.Contains(err.Error(), want) {
		t.Fatalf("want ErrNonFinite at step 3 naming %q; got %v", want, err)
	}
	for _, e := range extra {
		if !strings.Contains(err.Error(), e) {
			t.Fatalf("error lacks %q: %v", e, err)
		}
	}
	good := filepath.Join(checkpoint.Dir(dir), checkpoint.Name(2))
	if !strings.Contains(err.Error(), good) {
		t.Errorf("error does not name the last good checkpoint %s: %v", good, err)
	}
	st, err := checkpoint.Read(filepath.Join(checkpoint.Dir(dir), checkpoint.LatestName), table)
	if err != nil || st.Step != 2 {
		t.Fatalf("latest after the stop: %v %v", st, err)
	}
	return st
}
