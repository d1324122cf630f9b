//go:build e2e

package drivertest

// TestBinaries runs the real `make build-cuda` binaries (gorgonia.org/cu, cuda/cu.go) on the emulated driver, end
// to end, beside the default build's -device emu and -device cpu (`make test-emu-gpu`; CI runs it):
//   - at compute capability 7.0 and 9.0: bin/train -device cuda gives bit for bit the tensors of -device emu, and
//     bin/sample (ddpm and ddim) the same samples;
//   - at 9.0: a run killed with SIGKILL after a checkpoint and continued with -resume ends as the run that never
//     stopped; a checkpoint written on cuda continues on cpu and the other way round;
//   - faults (DDPM_EMU_FAIL): out of memory at set-up, a faulting launch and a failed synchronisation mid-run end
//     bin/train with exit status 1 and an error naming the op and the driver's error, keep the last checkpoint
//     intact, and -resume continues on cuda or cpu.

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ddpmgo/ddpm/checkpoint"
	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/safetensors"
)

// binaries are the cuda-tagged and default builds of bin/train and bin/sample.
type binaries struct{ cudaDir, cpuDir string }

func buildBinaries(t *testing.T) binaries {
	t.Helper()
	b := binaries{cudaDir: filepath.Join(tmp, "cuda"), cpuDir: filepath.Join(tmp, "cpu")}
	for _, c := range []struct {
		dir  string
		tags []string
	}{{b.cudaDir, []string{"-tags", "cuda"}}, {b.cpuDir, nil}} {
		args := append([]string{"build"}, c.tags...)
		args = append(args, "-o", c.dir+"/", "./cmd/train", "./cmd/sample")
		cmd := exec.Command("go", args...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_LDFLAGS="+os.Getenv("CGO_LDFLAGS")+" -L"+stubs)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %v: %v\n%s", args, err, out)
		}
	}
	return b
}

// e2eSets shrink configs/tiny.toml so that a step takes a fraction of a second on the emulator.
var e2eSets = []string{"data.image_size=8", "model.block_channels=[8, 16]", "model.norm_groups=4", "diffusion.timesteps=20",
	"train.batch_size=4", "data.max_items=64", "train.checkpoint_every=2", "train.log_every=2", "sample.count=2",
	"sample.steps=2", "train.sample_every=0"}

// job is one process of a test: a binary of a build, its device and emulated compute capability, extra flags.
type job struct {
	bin    string
	device string
	cc     string // DDPM_EMU_CC ("" for the default build)
	env    []string
}

func (j job) cmd(args ...string) *exec.Cmd {
	cmd := exec.Command(j.bin, append([]string{"-device", j.device}, args...)...)
	cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+libDir)
	if j.cc != "" {
		cmd.Env = append(cmd.Env, "DDPM_EMU_CC="+j.cc)
	}
	cmd.Env = append(cmd.Env, j.env...)
	return cmd
}

// train runs bin/train on tiny.toml into dir for steps steps and returns its exit status and output.
func (j job) train(t *testing.T, dir string, steps int, extra ...string) (int, string) {
	t.Helper()
	args := []string{"-c", filepath.Join(root, "configs", "tiny.toml"), "-set", "run.dir=" + dir,
		"-set", fmt.Sprintf("train.max_steps=%d", steps)}
	for _, s := range e2eSets {
		args = append(args, "-set", s)
	}
	out, err := j.cmd(append(args, extra...)...).CombinedOutput()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			t.Fatalf("%s: %v", j.bin, err)
		}
		code = ee.ExitCode()
	}
	return code, string(out)
}

func (j job) mustTrain(t *testing.T, dir string, steps int, extra ...string) {
	t.Helper()
	if code, out := j.train(t, dir, steps, extra...); code != 0 {
		t.Fatalf("%s -device %s (cc %s) exited %d:\n%s", filepath.Base(j.bin), j.device, j.cc, code, tail(out))
	}
}

func tail(s string) string {
	if len(s) > 3000 {
		return "…" + s[len(s)-3000:]
	}
	return s
}

func latest(dir string) string {
	return filepath.Join(checkpoint.Dir(dir), checkpoint.LatestName)
}

// tensors reads every tensor of a safetensors file by name.
func tensors(t *testing.T, path string) map[string][]float32 {
	t.Helper()
	f, err := safetensors.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string][]float32{}
	for _, ts := range f.Tensors {
		m[ts.Name] = ts.Data
	}
	return m
}

// sameTensors fails unless a and b hold the same tensors, bit for bit.
func sameTensors(t *testing.T, what, a, b string) {
	t.Helper()
	ta, tb := tensors(t, a), tensors(t, b)
	if len(ta) != len(tb) || len(ta) == 0 {
		t.Fatalf("%s: %d tensors in %s, %d in %s", what, len(ta), a, len(tb), b)
	}
	for name, x := range ta {
		y, ok := tb[name]
		if !ok || len(x) != len(y) {
			t.Fatalf("%s: tensor %s missing or of another size in %s", what, name, b)
		}
		for i := range x {
			if math.Float32bits(x[i]) != math.Float32bits(y[i]) {
				t.Fatalf("%s: %s element %d: %v in %s, %v in %s", what, name, i, x[i], a, y[i], b)
			}
		}
	}
}

// closeParams fails unless the trained weights of a and b differ by at most bound anywhere.
func closeParams(t *testing.T, what, a, b string, bound float64) {
	t.Helper()
	ta, tb := tensors(t, a), tensors(t, b)
	worst, n := 0.0, 0
	for name, x := range ta {
		if strings.Contains(name, "/") { // ema/, adamw.*/
			continue
		}
		y := tb[name]
		if len(y) != len(x) {
			t.Fatalf("%s: tensor %s missing in %s", what, name, b)
		}
		for i := range x {
			worst = max(worst, math.Abs(float64(x[i]-y[i])))
			n++
		}
	}
	t.Logf("%s: %d weights, largest difference %.3g (bound %.3g)", what, n, worst, bound)
	if n == 0 || !(worst <= bound) {
		t.Fatalf("%s: weights differ by up to %.3g > %.3g", what, worst, bound)
	}
}

func stepOf(t *testing.T, path string) string {
	t.Helper()
	f, err := safetensors.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return f.Metadata["step"]
}

func TestBinaries(t *testing.T) {
	if setup != nil {
		t.Fatal(setup) // under the e2e tag this test is asked for by name: never a skip
	}
	b := buildBinaries(t)
	emu := job{bin: filepath.Join(b.cpuDir, "train"), device: "emu"}
	cpu := job{bin: filepath.Join(b.cpuDir, "train"), device: "cpu"}
	src, err := os.ReadFile(filepath.Join(root, "configs", "tiny.toml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("tiny.toml", src, e2eSets)
	if err != nil {
		t.Fatal(err)
	}
	// The parity rule of train's step parity tests: each weight within 2 steps × 2·lr of the other backend's.
	bound := 2 * 2 * cfg.Train.LR

	ref := t.TempDir() // the emulator's run (default build) and its samples, the reference for both capabilities
	emu.mustTrain(t, ref, 4)
	refSamples := map[string][]byte{}
	for _, smp := range []string{"ddpm", "ddim"} {
		out := filepath.Join(ref, smp+".npy")
		s := job{bin: filepath.Join(b.cpuDir, "sample"), device: "emu"}
		if o, err := s.cmd("-ckpt", latest(ref), "-sampler", smp, "-n", "2", "-seed", "5", "-npy", out, "-out", out+".png").CombinedOutput(); err != nil {
			t.Fatalf("sample -device emu %s: %v\n%s", smp, err, o)
		}
		refSamples[smp], _ = os.ReadFile(out)
	}

	for _, cc := range []string{"7.0", "9.0"} {
		t.Run("cc"+cc, func(t *testing.T) {
			gpu := job{bin: filepath.Join(b.cudaDir, "train"), device: "cuda", cc: cc}
			dir := t.TempDir()
			gpu.mustTrain(t, dir, 4)
			sameTensors(t, "cuda vs emu checkpoint", latest(dir), latest(ref))
			sameTensors(t, "cuda vs emu EMA export", filepath.Join(dir, "unet_ema.safetensors"), filepath.Join(ref, "unet_ema.safetensors"))
			for _, smp := range []string{"ddpm", "ddim"} {
				out := filepath.Join(dir, smp+".npy")
				s := job{bin: filepath.Join(b.cudaDir, "sample"), device: "cuda", cc: cc}
				if o, err := s.cmd("-ckpt", latest(dir), "-sampler", smp, "-n", "2", "-seed", "5", "-npy", out, "-out", out+".png").CombinedOutput(); err != nil {
					t.Fatalf("sample -device cuda %s: %v\n%s", smp, err, o)
				}
				got, _ := os.ReadFile(out)
				if len(got) == 0 || string(got) != string(refSamples[smp]) {
					t.Errorf("%s samples on cuda (cc %s) differ from -device emu's", smp, cc)
				}
			}
		})
	}

	gpu := job{bin: filepath.Join(b.cudaDir, "train"), device: "cuda", cc: "9.0"}
	t.Run("kill-9 and resume", func(t *testing.T) {
		dir := t.TempDir()
		args := []string{"-c", filepath.Join(root, "configs", "tiny.toml"), "-set", "run.dir=" + dir, "-set", "train.max_steps=4"}
		for _, s := range e2eSets {
			args = append(args, "-set", s)
		}
		cmd := gpu.cmd(args...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		first := filepath.Join(checkpoint.Dir(dir), checkpoint.Name(2))
		deadline := time.Now().Add(5 * time.Minute)
		for {
			if _, err := os.Stat(first); err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		if _, err := os.Stat(first); err != nil {
			t.Fatalf("no checkpoint of step 2 before the kill: %v", err)
		}
		gpu.mustTrain(t, dir, 4, "-resume")
		sameTensors(t, "killed and resumed vs straight", latest(dir), latest(ref))
	})
	t.Run("cross-device resume", func(t *testing.T) {
		a, c := t.TempDir(), t.TempDir()
		gpu.mustTrain(t, a, 2)
		cpu.mustTrain(t, a, 4, "-resume") // cuda → cpu
		cpu.mustTrain(t, c, 2)
		gpu.mustTrain(t, c, 4, "-resume") // cpu → cuda
		for _, d := range []string{a, c} {
			if s := stepOf(t, latest(d)); s != "4" {
				t.Fatalf("%s: latest checkpoint at step %s, want 4", d, s)
			}
		}
		closeParams(t, "cuda → cpu vs emu straight", latest(a), latest(ref), bound)
		closeParams(t, "cpu → cuda vs emu straight", latest(c), latest(ref), bound)
	})

	t.Run("faults", func(t *testing.T) {
		for _, tc := range []struct {
			name, fail string
			want       []string // in the output
			ckpt       string   // the step of the last checkpoint left ("" none)
		}{
			{"out of memory at set-up", "alloc:5", []string{"cuda Alloc", "OutOfMemory", "no checkpoint was written yet"}, ""},
			{"faulting launch", "launch:adamw_ctl_f32:4", []string{"StepControl", "IllegalAddress", "step 4", checkpoint.Name(2)}, "2"},
			{"failed synchronisation", "sync:5", []string{"Sync", "LaunchFailed", "step 4", checkpoint.Name(2)}, "2"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				dir := t.TempDir()
				bad := gpu
				bad.env = []string{"DDPM_EMU_FAIL=" + tc.fail}
				code, out := bad.train(t, dir, 6)
				if code != 1 {
					t.Fatalf("exit status %d, want 1:\n%s", code, tail(out))
				}
				if strings.Contains(out, "panic:") || strings.Contains(out, "goroutine ") {
					t.Fatalf("a panic instead of an error:\n%s", tail(out))
				}
				for _, w := range tc.want {
					if !strings.Contains(out, w) {
						t.Errorf("output lacks %q:\n%s", w, tail(out))
					}
				}
				if tc.ckpt == "" {
					if _, err := os.Stat(latest(dir)); err == nil {
						t.Fatalf("a checkpoint after a failed set-up")
					}
					return
				}
				if s := stepOf(t, latest(dir)); s != tc.ckpt {
					t.Fatalf("last checkpoint at step %s, want %s", s, tc.ckpt)
				}
				other := t.TempDir()
				if err := exec.Command("cp", "-a", dir+"/.", other).Run(); err != nil {
					t.Fatal(err)
				}
				gpu.mustTrain(t, dir, 6, "-resume")
				cpu.mustTrain(t, other, 6, "-resume")
				for _, d := range []string{dir, other} {
					if s := stepOf(t, latest(d)); s != "6" {
						t.Fatalf("resumed run ended at step %s, want 6", s)
					}
				}
			})
		}
	})
}
