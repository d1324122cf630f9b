package main

import (
	"bytes"
	"context"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ddpmgo/ddpm/internal/cli"
)

// TestDryRunDevice: -dry-run with a GPU -device prints the step's device memory traced without a device (no GPU,
// nor the emulator, is opened: it works with -device cuda in a build without CUDA), broken into the trainer's
// buffers and the backend's own; bf16 peaks lower than fp32. The CPU's output has none of it.
func TestDryRunDevice(t *testing.T) {
	celeba := filepath.Join("..", "..", "configs", "celeba32.toml")
	dry := func(args ...string) string {
		t.Helper()
		var o, e bytes.Buffer
		args = append([]string{"-c", celeba, "-dry-run", "-set", "train.batch_size=64"}, args...)
		if code := run(context.Background(), args, &o, &e); code != cli.OK {
			t.Fatalf("%v: exit %d\n%s%s", args, code, o.String(), e.String())
		}
		return o.String()
	}
	peakRe := regexp.MustCompile(`device step traced at (\w+) \(.*\): peak ([0-9.]+) (MiB|GiB)\n`)
	peak := map[string]float64{}
	for _, c := range []struct{ device, prec string }{{"emu", "fp32"}, {"cuda", "bf16"}, {"emu", "auto"}} {
		out := dry("-device", c.device, "-set", "train.precision="+c.prec)
		m := peakRe.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("-device %s, %s: no traced device step:\n%s", c.device, c.prec, out)
		}
		v, _ := strconv.ParseFloat(m[2], 64)
		if m[3] == "GiB" {
			v *= 1024
		}
		peak[c.prec] = v
		for _, want := range []string{"trainer's buffers", "backend's own", "scratch", "packed conv weights",
			"traces at batch 64 and 32", c.device + " free memory unknown (-dry-run opens no device)"} {
			if !strings.Contains(out, want) {
				t.Errorf("-device %s, %s: no %q in\n%s", c.device, c.prec, want, out)
			}
		}
		if want := map[string]string{"auto": "bf16"}[c.prec]; want != "" && m[1] != want {
			t.Errorf("precision auto traced at %s, want %s (a GPU of compute capability 8.0)", m[1], want)
		}
	}
	if !(peak["bf16"] < peak["fp32"]) || peak["auto"] != peak["bf16"] {
		t.Errorf("device peaks (MiB): %v; want bf16 (and auto) below fp32", peak)
	}
	if out := dry(); strings.Contains(out, "device step") || !strings.Contains(out, "operand copies") {
		t.Errorf("-device cpu: the CPU estimate, with no device lines:\n%s", out)
	}
}

// TestDryRunUnknownDevice: -dry-run, which opens no backend, still refuses a -device no backend has, before printing
// anything.
func TestDryRunUnknownDevice(t *testing.T) {
	var o, e bytes.Buffer
	args := []string{"-c", filepath.Join("..", "..", "configs", "tiny.toml"), "-dry-run", "-device", "gpu0"}
	if code := run(context.Background(), args, &o, &e); code != cli.Usage || o.Len() != 0 ||
		!strings.Contains(e.String(), `-device "gpu0"`) {
		t.Errorf("exit %d, stdout %q, stderr %q; want a usage error naming the device and nothing printed", code,
			o.String(), e.String())
	}
}
