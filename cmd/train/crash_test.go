package main

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ddpmgo/ddpm/checkpoint"
	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/cpu"
	"github.com/ddpmgo/ddpm/data"
	"github.com/ddpmgo/ddpm/model"
	"github.com/ddpmgo/ddpm/rng"
	"github.com/ddpmgo/ddpm/safetensors"
	"github.com/ddpmgo/ddpm/train"
)

// crashConfig is a tiny run on a packed data set of random 16×16 images, with every state a resume must restore
// exercised (dropout, flips, epochs crossed: 64 images are 8 batches of 8) and a checkpoint after every step, so
// that a good part of the run is spent writing checkpoints.
const crashConfig = `
[data]
source = "packed"
path = %q
image_size = 16
channels = 1
flip = true
[model]
block_channels = [16, 32]
layers_per_block = 1
norm_groups = 4
dropout = 0.1
[diffusion]
timesteps = 50
[train]
batch_size = 8
epochs = 0
max_steps = %d
lr = 1e-3
checkpoint_every = 1
keep_checkpoints = 2
log_every = 5
seed = 7
[sample]
sampler = "ddim"
steps = 2
count = 4
`

// crashSetup builds bin/train and writes the data set and the config; it returns the binary, the config path and
// the parsed config.
func crashSetup(t *testing.T, steps int) (bin, cfgPath string, cfg config.Config) {
	t.Helper()
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		if goBin, err = exec.LookPath("go"); err != nil {
			t.Fatal("no go tool to build the binary")
		}
	}
	tmp := t.TempDir()
	bin = filepath.Join(tmp, "train")
	if out, err := exec.Command(goBin, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	m := &data.Images{C: 1, H: 16, W: 16, Pix: make([]uint8, 64*256)}
	for i := range m.Pix {
		m.Pix[i] = uint8(rng.Uint32(3, 1, uint64(i)))
	}
	pack := filepath.Join(tmp, "data.pack")
	if err := data.WritePack(pack, m); err != nil {
		t.Fatal(err)
	}
	cfgPath = filepath.Join(tmp, "crash.toml")
	src := fmt.Sprintf(crashConfig, pack, steps)
	if err := os.WriteFile(cfgPath, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse(cfgPath, []byte(src), nil)
	if err != nil {
		t.Fatal(err)
	}
	return bin, cfgPath, cfg
}

// tmpFiles lists the temporaries of atomic writes in dir (a write in progress, or cut short by a kill).
func tmpFiles(dir string) []string {
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") && strings.Contains(e.Name(), ".tmp-") {
			out = append(out, e.Name())
		}
	}
	return out
}

// newest is the step of the newest step-N checkpoint file in dir (−1 if none).
func newest(dir string) int {
	cks, _ := checkpoint.List(dir)
	if len(cks) == 0 {
		return -1
	}
	var s int
	fmt.Sscanf(filepath.Base(cks[len(cks)-1]), "step-%d.safetensors", &s)
	return s
}

// TestKillAndResume SIGKILLs bin/train many times, at seeded random moments and at moments when a checkpoint write
// is under way, resumes it with -resume each time, and checks that the latest checkpoint always loads and that the
// final checkpoint and EMA export are bit-identical to those of an uninterrupted run of the same steps.
func TestKillAndResume(t *testing.T) {
	const steps = 48
	bin, cfgPath, cfg := crashSetup(t, steps)
	unet, err := model.New(cpu.New(), cfg.Model, cfg.Data.Channels, cfg.Data.ImageSize, 1)
	if err != nil {
		t.Fatal(err)
	}
	table := unet.Table()
	start := func(dir string, resume bool) (*exec.Cmd, *bytes.Buffer) {
		args := []string{"-c", cfgPath, "-set", "run.dir=" + dir}
		if resume {
			args = append(args, "-resume")
		}
		cmd := exec.Command(bin, args...)
		var e bytes.Buffer
		cmd.Stderr = &e
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, &e
	}

	straight := filepath.Join(t.TempDir(), "straight")
	t0 := time.Now()
	cmd, e := start(straight, false)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("uninterrupted run: %v\n%s", err, e)
	}
	// The time of a step (start-up included, spread over the steps) scales the random kill times, so that the
	// progress between kills is a few steps on a fast machine and a slow one alike.
	stepTime := time.Since(t0) / steps

	dir := filepath.Join(t.TempDir(), "killed")
	ckdir := checkpoint.Dir(dir)
	latest := filepath.Join(ckdir, checkpoint.LatestName)
	r := rand.New(rand.NewPCG(2024, 11))
	const wantKills, wantInWrite = 8, 3
	kills, inWrite, lastStep := 0, 0, -1
	deadline := time.Now().Add(90 * time.Second)
	for attempt := 0; kills < wantKills || inWrite < wantInWrite; attempt++ {
		if attempt > 60 || time.Now().After(deadline) {
			t.Fatalf("after %d attempts: %d kills, %d during a checkpoint write (want %d and %d)", attempt, kills, inWrite, wantKills, wantInWrite)
		}
		_, err := os.Stat(latest)
		// Temporaries left by earlier kills do not count: only one this process makes shows a write under way.
		stale := map[string]bool{}
		for _, name := range tmpFiles(ckdir) {
			stale[name] = true
		}
		fresh := func() bool {
			for _, name := range tmpFiles(ckdir) {
				if strings.HasPrefix(name, ".step-") && !stale[name] {
					return true
				}
			}
			return false
		}
		base := newest(ckdir)
		cmd, e := start(dir, err == nil)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		// waitFor polls until ready says so, failing if the run ends first.
		waitFor := func(ready func() bool) {
			for !ready() {
				select {
				case err := <-done:
					t.Fatalf("the run ended (%v) before it could be killed; raise steps\n%s", err, e)
				default:
				}
				time.Sleep(100 * time.Microsecond)
			}
		}
		duringWrite := attempt%2 == 1
		switch k := r.IntN(3); {
		case duringWrite:
			// As soon as this process's checkpoint temporary appears, kill: the write is under way.
			waitFor(fresh)
		case k == 0:
			// Anywhere from start-up to the first steps.
			time.Sleep(time.Duration(r.Int64N(int64(2 * stepTime))))
		default:
			// A random moment within the step after k new checkpoints.
			waitFor(func() bool { return newest(ckdir) >= base+k })
			time.Sleep(time.Duration(r.Int64N(int64(stepTime))))
		}
		cmd.Process.Signal(syscall.SIGKILL)
		err = <-done
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("attempt %d: the run was not killed (%v); raise steps\n%s", attempt, err, e)
		}
		kills++
		cut := fresh()
		if duringWrite && cut {
			inWrite++
		}
		if _, err := os.Stat(latest); err != nil {
			continue // killed before the first checkpoint
		}
		st, err := checkpoint.Read(latest, table)
		if err != nil {
			t.Fatalf("kill %d (during a write: %v): the latest checkpoint does not load: %v", kills, cut, err)
		}
		if st.Step < lastStep {
			t.Fatalf("kill %d: latest went back from step %d to %d", kills, lastStep, st.Step)
		}
		lastStep = st.Step
		t.Logf("kill %d (attempt %d, during a checkpoint write: %v): latest at step %d", kills, attempt, cut, st.Step)
	}
	if lastStep >= steps {
		t.Fatalf("the killed run reached step %d before the last kill; the test needs more steps", lastStep)
	}
	cmd, e = start(dir, true)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("final resume: %v\n%s", err, e)
	}

	final := fmt.Sprintf("step-%08d.safetensors", steps)
	for _, pair := range [][2]string{
		{filepath.Join(checkpoint.Dir(straight), final), filepath.Join(ckdir, final)},
		{filepath.Join(straight, train.EMAWeights), filepath.Join(dir, train.EMAWeights)},
	} {
		a, err := safetensors.ReadFile(pair[0])
		if err != nil {
			t.Fatal(err)
		}
		b, err := safetensors.ReadFile(pair[1])
		if err != nil {
			t.Fatal(err)
		}
		if len(a.Tensors) != len(b.Tensors) {
			t.Fatalf("%d vs %d tensors", len(a.Tensors), len(b.Tensors))
		}
		for _, ta := range a.Tensors {
			tb, ok := b.Get(ta.Name)
			if !ok {
				t.Fatalf("%s: no tensor %s", pair[1], ta.Name)
			}
			for i := range ta.Data {
				if math.Float32bits(ta.Data[i]) != math.Float32bits(tb.Data[i]) {
					t.Fatalf("%s[%d]: %v uninterrupted, %v after %d kills", ta.Name, i, ta.Data[i], tb.Data[i], kills)
				}
			}
		}
		for _, k := range []string{"step", "adam_step", "data_epoch", "data_index"} {
			if a.Metadata[k] != b.Metadata[k] {
				t.Errorf("%s metadata %s: %q vs %q", filepath.Base(pair[0]), k, a.Metadata[k], b.Metadata[k])
			}
		}
	}
	if left := tmpFiles(ckdir); len(left) != 0 {
		t.Errorf("temporaries left after the final run: %v", left)
	}
	t.Logf("%d kills, %d of them during a checkpoint write; final tensors identical", kills, inWrite)
}

// TestSIGTERMCheckpointsAndExits0: SIGTERM during training finishes the step, writes a checkpoint (the only one:
// checkpoint_every = 0) and exits 0, and -resume continues from it.
func TestSIGTERMCheckpointsAndExits0(t *testing.T) {
	bin, cfgPath, _ := crashSetup(t, 100000)
	dir := filepath.Join(t.TempDir(), "run")
	cmd := exec.Command(bin, "-c", cfgPath, "-set", "run.dir="+dir, "-set", "train.checkpoint_every=0", "-set", "train.log_every=1")
	var e bytes.Buffer
	cmd.Stderr = &e
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if b, _ := os.ReadFile(filepath.Join(dir, "metrics.jsonl")); bytes.Count(b, []byte("\n")) >= 3 {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("no progress in 30 s:\n%s", e.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("after SIGTERM: %v\n%s", err, e.String())
	}
	cks, _ := filepath.Glob(filepath.Join(checkpoint.Dir(dir), "step-*.safetensors"))
	if len(cks) != 1 || !strings.Contains(e.String(), "interrupted") {
		t.Fatalf("checkpoints %v after SIGTERM; log:\n%s", cks, e.String())
	}
	f, err := safetensors.ReadFile(filepath.Join(checkpoint.Dir(dir), checkpoint.LatestName))
	if err != nil || f.Metadata["step"] == "" || f.Metadata["step"] == "0" {
		t.Fatalf("latest after SIGTERM: %v", err)
	}
	// The damaged-checkpoint check of -resume-from: a bit-flipped and a truncated copy are refused naming the file.
	good, _ := os.ReadFile(cks[0])
	for name, b := range map[string][]byte{
		"flipped.safetensors":   func() []byte { c := bytes.Clone(good); c[len(c)/2] ^= 4; return c }(),
		"truncated.safetensors": good[:len(good)-1000],
	} {
		p := filepath.Join(t.TempDir(), name)
		os.WriteFile(p, b, 0o644)
		out, err := exec.Command(bin, "-c", cfgPath, "-set", "run.dir="+filepath.Join(t.TempDir(), "r"), "-resume-from", p).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), p) {
			t.Errorf("-resume-from %s: %v, want exit 1 naming the file:\n%s", name, err, out)
		}
	}
}

// TestDryRunPrintsTheMemoryEstimate: -dry-run prints the memory check that training makes before it starts, with
// the data set counted from its header, and says when the batch does not fit and which batch does.
func TestDryRunPrintsTheMemoryEstimate(t *testing.T) {
	bin, cfgPath, cfg := crashSetup(t, 10)
	out, err := exec.Command(bin, "-c", cfgPath, "-dry-run").Output()
	if err != nil {
		t.Fatal(err)
	}
	// 64 images of 1×16×16 bytes = 16 KiB = 0.0 MiB; the step's bytes are model.Summary's at batch 8 plus the CPU
	// backend's copies of a convolution's operands (x, y, dy twice, dx in float32: 20 B per element of the largest
	// activation, per image).
	_, _, step := model.Summary(cfg.Model, 1, 16, 8)
	step += 8 * 20 * int64(model.LargestTensor(cfg.Model, 1, 16))
	want := fmt.Sprintf("memory estimate at batch 8, precision fp32: training step %.1f MiB", float64(step)/(1<<20))
	if !strings.Contains(string(out), want) || !strings.Contains(string(out), "data set 0.0 MiB") || strings.Contains(string(out), "DOES NOT FIT") {
		t.Errorf("-dry-run lacks %q or misreports:\n%s", want, out)
	}
	out, err = exec.Command(bin, "-c", cfgPath, "-dry-run", "-set", "train.batch_size=67108864").Output()
	if err != nil || !strings.Contains(string(out), "DOES NOT FIT") || !strings.Contains(string(out), "train.batch_size = ") {
		t.Errorf("-dry-run of a batch no machine holds: %v\n%s", err, out)
	}
	// Training with it fails before the first step, with the same numbers.
	dir := filepath.Join(t.TempDir(), "run")
	full, err := exec.Command(bin, "-c", cfgPath, "-set", "run.dir="+dir, "-set", "train.batch_size=67108864").CombinedOutput()
	if err == nil || !strings.Contains(string(full), "needs about") || !strings.Contains(string(full), "train.batch_size = ") {
		t.Errorf("training a batch no machine holds: %v\n%s", err, full)
	}
	if _, err := os.Stat(filepath.Join(dir, "checkpoints")); err == nil {
		t.Error("the refused run made a checkpoint folder")
	}
}
