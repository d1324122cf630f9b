package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// buildSample builds bin/sample into a temporary folder.
func buildSample(t *testing.T) string {
	t.Helper()
	goBin := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goBin); err != nil {
		if goBin, err = exec.LookPath("go"); err != nil {
			t.Fatal("no go tool to build the binary")
		}
	}
	bin := filepath.Join(t.TempDir(), "sample")
	if out, err := exec.Command(goBin, "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestSignalWritesNoPartialImage sends SIGINT and SIGTERM to bin/sample in the middle of a long sampling run: it
// exits 1 saying it was interrupted, and neither the PNG nor the npy file (nor a temporary) exists afterwards.
func TestSignalWritesNoPartialImage(t *testing.T) {
	ck := trainedCheckpoint(t)
	bin := buildSample(t)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := t.TempDir()
			png, npy := filepath.Join(dir, "grid.png"), filepath.Join(dir, "x.npy")
			// 20 000 images × 20 DDPM steps of the tiny model: far longer than the test waits.
			cmd := exec.Command(bin, "-ckpt", ck, "-sampler", "ddpm", "-n", "20000", "-batch", "256", "-out", png, "-npy", npy)
			var e bytes.Buffer
			cmd.Stderr = &e
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(700 * time.Millisecond) // past start-up (the handler is installed first thing), into sampling
			t0 := time.Now()
			cmd.Process.Signal(sig)
			err := cmd.Wait()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(e.String(), "interrupted") {
				t.Fatalf("after %v: %v (want exit 1 saying interrupted)\n%s", sig, err, e.String())
			}
			if d := time.Since(t0); d > 5*time.Second {
				t.Errorf("took %v to stop after the signal", d)
			}
			ents, _ := os.ReadDir(dir)
			if len(ents) != 0 {
				t.Errorf("files after an interrupted run: %v", ents)
			}
		})
	}
}

// TestFailedWriteLeavesNoPartialFile: an output that cannot be put in place (here the -out name is taken by a
// directory, so the final rename fails) is an error naming it, with no temporary left beside it; an existing -npy
// file is replaced whole.
func TestFailedWriteLeavesNoPartialFile(t *testing.T) {
	ck := trainedCheckpoint(t)
	dir := t.TempDir()
	taken := filepath.Join(dir, "grid.png")
	if err := os.Mkdir(taken, 0o755); err != nil {
		t.Fatal(err)
	}
	code, stderr := sample(t, "-ckpt", ck, "-sampler", "ddim", "-steps", "2", "-n", "2", "-out", taken)
	if code != 1 || !strings.Contains(stderr, taken) {
		t.Fatalf("exit %d, %s; want 1 naming %s", code, stderr, taken)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("left beside the output: %v", ents)
	}
	npy := filepath.Join(dir, "x.npy")
	os.WriteFile(npy, []byte("old contents"), 0o644)
	if code, stderr := sample(t, "-ckpt", ck, "-sampler", "ddim", "-steps", "2", "-n", "2", "-npy", npy); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if b, _ := os.ReadFile(npy); !bytes.HasPrefix(b, []byte("\x93NUMPY")) {
		t.Errorf("npy not replaced: %q", b[:min(len(b), 12)])
	}
}
