//go:build !cuda

package train

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"go.uber.org/zap"

	"github.com/ddpmgo/ddpm/cuda"
	"github.com/ddpmgo/ddpm/data"
	"github.com/ddpmgo/ddpm/ops"
)

var update = flag.Bool("update", false, "rewrite testdata/launches_tiny_step.golden")

// launchRecorder is a Driver over the emulator that notes every launch and, when dry, does not run it (the launch
// sequence of a step does not depend on the values computed, so recording needs no kernel to run).
type launchRecorder struct {
	cuda.Driver
	dry   bool
	on    bool
	lines []string
}

// Launch notes kernel, grid, block, dynamic shared bytes and each argument: pointers as p64 (addresses differ from
// run to run), integers with their values (sizes, seeds, counters), floats as f32/f64 with their values omitted
// (learning rates and scales are not launch geometry).
func (r *launchRecorder) Launch(kernel string, grid, block cuda.Dim3, smem int, args ...cuda.Arg) error {
	if r.on {
		var b strings.Builder
		fmt.Fprintf(&b, "%s grid=%s block=%s smem=%d args=", kernel, dim(grid), dim(block), smem)
		b.WriteString(cuda.Geometry(args))
		r.lines = append(r.lines, b.String())
	}
	if r.dry {
		return nil
	}
	return r.Driver.Launch(kernel, grid, block, smem, args...)
}

// The copies and fills of the step are noted too (sizes only): the golden file shows what crosses the bus.
func (r *launchRecorder) HtoD(dst cuda.DevicePtr, src unsafe.Pointer, bytes int) error {
	r.note("HtoD", bytes)
	return r.Driver.HtoD(dst, src, bytes)
}

func (r *launchRecorder) DtoH(dst unsafe.Pointer, src cuda.DevicePtr, bytes int) error {
	r.note("DtoH", bytes)
	return r.Driver.DtoH(dst, src, bytes)
}

func (r *launchRecorder) DtoD(dst, src cuda.DevicePtr, bytes int) error {
	r.note("DtoD", bytes)
	return r.Driver.DtoD(dst, src, bytes)
}

func (r *launchRecorder) Memset32(p cuda.DevicePtr, v uint32, n int) error {
	r.note("Memset32", 4*n)
	return r.Driver.Memset32(p, v, n)
}

func (r *launchRecorder) note(op string, bytes int) {
	if r.on {
		r.lines = append(r.lines, fmt.Sprintf("%s %d bytes", op, bytes))
	}
}

func dim(d cuda.Dim3) string { return fmt.Sprintf("%dx%dx%d", max(d.X, 1), max(d.Y, 1), max(d.Z, 1)) }

// TestEmuLaunchGoldenTinyStep records the launch sequence of one training step of configs/tiny.toml on the GPU
// backend (forward, backward, the gradient-norm reduction, the device-side clipping factor and window statistics,
// AdamW, EMA, the resident batch gather and timestep draw) and compares it with testdata/launches_tiny_step.golden
// (with the step's copies and fills), so that a change to the launchers or the model shows its effect on the
// launches in review, without a GPU. A steady-state step between two reads of the metrics must copy nothing between
// host and device; the read itself is one DtoH of the window statistics and, while the schedule's warm-ups change
// the settings, one HtoD of the next window's. `go test ./train -run
// LaunchGolden -update` rewrites the file.
func TestEmuLaunchGoldenTinyStep(t *testing.T) {
	cfg := parityConfig(t, t.TempDir())
	rec := &launchRecorder{Driver: cuda.NewEmulator(cuda.EmuOptions{}), dry: true}
	be, err := cuda.NewBackend(rec)
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Driver.Close()
	// Synthetic images, so that the file does not depend on which data sets are installed (2048: tiny.toml's
	// max_items, an argument of the gather).
	tr, err := setup(cfg, Options{Backend: be, Dataset: syntheticTiny(2048)}, zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.close()
	_, hostFeed := tr.feed.f.(*data.HostFeed)
	_, hostCtl := tr.ctl.(*ops.HostStepControl)
	if hostFeed || hostCtl {
		t.Fatalf("the GPU backend did not hold the data set (%v) or end the step on the device (%v)", !hostFeed, !hostCtl)
	}
	// Step 1 draws the epoch's order (an upload outside the step proper) and is read; record step 2, a
	// steady-state step.
	if err := tr.step(); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.read(); err != nil {
		t.Fatal(err)
	}
	rec.on = true
	if err := tr.step(); err != nil {
		t.Fatal(err)
	}
	rec.on = false
	got := strings.Join(rec.lines, "\n") + "\n"
	path := filepath.Join("testdata", "launches_tiny_step.golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s: %d launches", path, len(rec.lines))
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (create it with go test ./train -run LaunchGolden -update)", err)
	}
	if got != string(want) {
		gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
		for i := 0; i < max(len(gl), len(wl)); i++ {
			var g, w string
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Fatalf("launch %d of %d (golden %d) differs:\n got  %s\n want %s\n(if the change is intended: go test ./train -run LaunchGolden -update)",
					i+1, len(gl)-1, len(wl)-1, g, w)
			}
		}
	}
	if htod, dtoh := copies(rec.lines); htod != 0 || dtoh != 0 {
		t.Errorf("a steady-state step copies %d times to and %d times from the device; want none", htod, dtoh)
	}
	if len(rec.lines) < 50 {
		t.Fatalf("only %d launches recorded for a U-Net step", len(rec.lines))
	}

	// The read of the metrics: one copy of the window statistics (64 bytes) from the device, and, while the warm-ups
	// change them, one of the next window's settings (5 floats per step of the window) to it.
	rec.lines, rec.on = nil, true
	if _, err := tr.read(); err != nil {
		t.Fatal(err)
	}
	rec.on = false
	wantRead := []string{"DtoH 64 bytes", fmt.Sprintf("HtoD %d bytes", 4*5*windowSize(cfg.Train))}
	if !slices.Equal(rec.lines, wantRead) {
		t.Errorf("the read of the window statistics did %v; want %v", rec.lines, wantRead)
	}
}

// copies counts the HtoD and DtoH lines of a recording.
func copies(lines []string) (htod, dtoh int) {
	for _, l := range lines {
		htod += strings.Count(l, "HtoD ")
		dtoh += strings.Count(l, "DtoH ")
	}
	return htod, dtoh
}
