package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ddpmgo/ddpm/data"
)

// TestBinary builds bin/train and runs it on configs/tiny.toml (Fashion-MNIST from the Debian package): exit codes,
// -print-config, -dry-run, a short run with JSON logs, -resume, and SIGINT.
func TestBinary(t *testing.T) {
	if _, err := os.Stat(data.FashionMNISTDir); err != nil {
		// scripts/setup.sh installs it; only a machine set up by hand may lack it, and CI must not.
		if os.Getenv("CI") != "" {
			t.Fatalf("Fashion-MNIST is not installed at %s: scripts/setup.sh installs dataset-fashion-mnist", data.FashionMNISTDir)
		}
		t.Skipf("Fashion-MNIST is not installed at %s (scripts/setup.sh, or apt-get install dataset-fashion-mnist)", data.FashionMNISTDir)
	}
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		if goBin, err = exec.LookPath("go"); err != nil {
			t.Fatal("no go tool to build the binary")
		}
	}
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "train")
	if out, err := exec.Command(goBin, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	tiny := filepath.Join("..", "..", "configs", "tiny.toml")
	celeba := filepath.Join("..", "..", "configs", "celeba32.toml")

	exe := func(args ...string) (code int, stdout, stderr string) {
		t.Helper()
		cmd := exec.Command(bin, args...)
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err := cmd.Run()
		var ee *exec.ExitError
		switch {
		case err == nil:
			return 0, o.String(), e.String()
		case errors.As(err, &ee):
			return ee.ExitCode(), o.String(), e.String()
		}
		t.Fatalf("run %v: %v", args, err)
		return
	}

	t.Run("usage and config errors exit 2", func(t *testing.T) {
		for _, c := range []struct {
			args []string
			want string
		}{
			{[]string{"-c", tiny, "-set", "train.bogus_key=1"}, "train.bogus_key"},
			{[]string{"-c", tiny, "-set", "train.batch_size=-4"}, "train.batch_size"},
			{[]string{"-c", filepath.Join(tmp, "missing.toml")}, "missing.toml"},
			{[]string{"-c", tiny, "-device", "cuda"}, "-tags cuda"},
			{[]string{"-c", tiny, "-device", "tpu"}, "allowed: cpu, cuda, emu"},
			{[]string{"-no-such-flag"}, "no-such-flag"},
			{[]string{"-c", tiny, "-log-format", "xml"}, "console, json"},
		} {
			code, _, stderr := exe(c.args...)
			if code != 2 || !strings.Contains(stderr, c.want) {
				t.Errorf("%v: exit %d, stderr %q; want 2 naming %q", c.args, code, stderr, c.want)
			}
		}
	})

	t.Run("help documents every flag", func(t *testing.T) {
		code, _, stderr := exe("-h")
		if code != 0 {
			t.Errorf("-h exit %d", code)
		}
		for _, f := range []string{"-c FILE", "-set", "-print-config", "-dry-run", "-device", "-log-format", "-resume", "-resume-from", "-bench", "Exit status"} {
			if !strings.Contains(stderr, f) {
				t.Errorf("-h does not mention %s", f)
			}
		}
	})

	t.Run("print-config", func(t *testing.T) {
		code, stdout, _ := exe("-c", celeba, "-print-config")
		if code != 0 {
			t.Fatalf("exit %d", code)
		}
		for _, want := range []string{"batch_size = 256", "max_items = 10000", "lr = 0.0002", "timesteps = 1000", "beta_end = 0.02"} {
			if !strings.Contains(stdout, want) {
				t.Errorf("-print-config of celeba32.toml lacks %q", want)
			}
		}
		// Without -c: the embedded default; -set applies.
		_, stdout, _ = exe("-print-config", "-set", "train.lr=5e-4")
		if !strings.Contains(stdout, `name = "fashion32"`) || !strings.Contains(stdout, "lr = 0.0005") {
			t.Errorf("embedded default with -set: %s", stdout)
		}
	})

	t.Run("dry-run", func(t *testing.T) {
		code, stdout, _ := exe("-c", celeba, "-dry-run")
		if code != 0 || !strings.Contains(stdout, "14,406,531") || !strings.Contains(stdout, "mid_block") {
			t.Errorf("exit %d, summary:\n%s", code, stdout)
		}
	})

	t.Run("bench prints its line last and writes no run directory", func(t *testing.T) {
		dir := filepath.Join(tmp, "bench-run")
		code, stdout, stderr := exe("-c", tiny, "-bench", "2", "-bench-warmup", "1", "-set", "train.batch_size=8", "-set", "run.dir="+dir)
		if code != 0 {
			t.Fatalf("exit %d:\n%s", code, stderr)
		}
		lines := strings.Split(strings.TrimSpace(stdout), "\n")
		last := lines[len(lines)-1]
		re := regexp.MustCompile(`^bench: ([0-9.]+) img/s, ([0-9.]+) GFLOP/s, ([0-9.]+) ms/step, ([0-9]+) MiB peak$`)
		m := re.FindStringSubmatch(last)
		if m == nil {
			t.Fatalf("last line %q does not read bench: <img/s> img/s, <GFLOP/s> GFLOP/s, <ms> ms/step, <MiB> MiB peak", last)
		}
		imgs, _ := strconv.ParseFloat(m[1], 64)
		ms, _ := strconv.ParseFloat(m[3], 64)
		if mib, _ := strconv.Atoi(m[4]); imgs <= 0 || ms <= 0 || mib <= 0 {
			t.Errorf("bench line %q: figures must be positive", last)
		}
		// img/s and ms/step describe the same steps of 8 images.
		if r := imgs * ms / 1000 / 8; r < 0.95 || r > 1.05 {
			t.Errorf("bench line %q: img/s × s/step = %.3f batches, want 1", last, r)
		}
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("-bench wrote the run directory %s", dir)
		}
	})

	t.Run("precision", func(t *testing.T) {
		bench := []string{"-c", tiny, "-bench", "1", "-bench-warmup", "0", "-set", "train.batch_size=4", "-set", "run.dir=" + filepath.Join(tmp, "prec")}
		code, stdout, stderr := exe(bench...)
		if code != 0 || !strings.Contains(stdout, "precision fp32 (conv ") {
			t.Errorf("fp32 bench: exit %d, the summary line names no precision and kernels:\n%s%s", code, stdout, stderr)
		}
		if code, _, stderr := exe(append(bench, "-set", "train.precision=tf32")...); code != 2 || !strings.Contains(stderr, "GPU") {
			t.Errorf("tf32 on the CPU: exit %d, %s; want 2 and a message naming the GPU", code, stderr)
		}
		// oneDNN held to plain AVX-512 would emulate bf16: refused at start, whatever this CPU has.
		cmd := exec.Command(bin, append(bench, "-set", "train.precision=bf16")...)
		cmd.Env = append(os.Environ(), "ONEDNN_MAX_CPU_ISA=AVX512_CORE")
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "bf16") ||
			!(strings.Contains(string(out), "oneDNN chose") || strings.Contains(string(out), "avx512_bf16")) {
			t.Errorf("bf16 with oneDNN limited to AVX512_CORE: %v, %s; want exit 2 naming what is missing", err, out)
		}
		code, stdout, stderr = exe(append(bench, "-set", "train.precision=bf16")...)
		switch {
		case code == 2 && strings.Contains(stderr, "avx512_bf16"):
			t.Logf("this CPU has no bf16 instructions; bf16 refused at start as it must be: %s", stderr)
		case code != 0 || !strings.Contains(stdout, "precision bf16 (conv ") || !strings.Contains(stdout, "_bf16)"):
			t.Errorf("bf16 bench: exit %d, want a summary line naming bf16 and oneDNN's bf16 kernel:\n%s%s", code, stdout, stderr)
		}
	})

	dir := filepath.Join(tmp, "run")
	common := []string{"-c", tiny, "-set", "run.dir=" + dir, "-set", "sample.count=4", "-set", "train.log_every=2",
		"-set", "train.checkpoint_every=3"}
	t.Run("train, resume, refuse a fresh run over checkpoints", func(t *testing.T) {
		code, _, stderr := exe(append(common, "-set", "train.max_steps=3", "-log-format", "json")...)
		if code != 0 {
			t.Fatalf("exit %d:\n%s", code, stderr)
		}
		sawConfig := 0
		sc := bufio.NewScanner(strings.NewReader(stderr))
		for sc.Scan() {
			var m map[string]any
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Fatalf("-log-format json wrote a non-JSON line %q", sc.Text())
			}
			if m["msg"] == "resolved config" {
				sawConfig++
			}
		}
		if sawConfig != 1 {
			t.Errorf("resolved config logged %d times, want once", sawConfig)
		}
		for _, f := range []string{"config.toml", "metrics.jsonl", "loss.png", "unet_ema.safetensors", "samples/step-00000003.png",
			"checkpoints/step-00000003.safetensors", "checkpoints/latest.safetensors"} {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				t.Errorf("missing %s", f)
			}
		}
		if code, _, stderr := exe(append(common, "-set", "train.max_steps=5")...); code != 1 || !strings.Contains(stderr, "-resume") {
			t.Errorf("fresh run over checkpoints: exit %d, %s", code, stderr)
		}
		if code, _, stderr := exe(append(common, "-set", "train.max_steps=5", "-resume")...); code != 0 {
			t.Fatalf("-resume: exit %d\n%s", code, stderr)
		}
		if _, err := os.Stat(filepath.Join(dir, "checkpoints/step-00000005.safetensors")); err != nil {
			t.Error("resumed run left no step-5 checkpoint")
		}
	})

	t.Run("SIGINT checkpoints and exits 0", func(t *testing.T) {
		dir := filepath.Join(tmp, "sigint")
		cmd := exec.Command(bin, "-c", tiny, "-set", "run.dir="+dir, "-set", "train.max_steps=100000",
			"-set", "train.log_every=1", "-set", "train.checkpoint_every=0")
		var e bytes.Buffer
		cmd.Stderr = &e
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(60 * time.Second)
		for {
			if b, _ := os.ReadFile(filepath.Join(dir, "metrics.jsonl")); bytes.Count(b, []byte("\n")) >= 2 {
				break
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				t.Fatalf("no training progress within 60 s:\n%s", e.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
		cmd.Process.Signal(syscall.SIGINT)
		err := cmd.Wait()
		if err != nil {
			t.Fatalf("after SIGINT: %v\n%s", err, e.String())
		}
		cks, _ := filepath.Glob(filepath.Join(dir, "checkpoints", "step-*.safetensors"))
		if len(cks) != 1 || !strings.Contains(e.String(), "interrupted") {
			t.Errorf("checkpoints %v after SIGINT; log:\n%s", cks, e.String())
		}
	})
}
