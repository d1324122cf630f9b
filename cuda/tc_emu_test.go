//go:build !cuda

package cuda

import (
	"math"
	"strings"
	"testing"
)

// The emulator's checks of cp.async and mma.sync (kernels/emu/cp_async.h, kernels/emu/mma.h), through the kernels
// of kernels/emu/selftest_tc.cu: the sizes and partial zero fill that the convolutions do not use, and each misuse
// the emulator must refuse (on a GPU they are undefined behaviour).

func TestEmuCpAsyncSizes(t *testing.T) {
	e := newTestEmu(t)
	const n = 40
	src := make([]float32, 12*n)
	for i := range src {
		src[i] = float32(i + 1)
	}
	init := make([]float32, 12*n)
	for i := range init {
		init[i] = -7
	}
	out := mustAlloc(t, e, init)
	if err := e.Launch("emu_test_cp_async_sizes", Dim3{1, 1, 1}, Dim3{n, 1, 1}, 12*n*4, Ptr(mustAlloc(t, e, src)),
		Ptr(out)); err != nil {
		t.Fatal(err)
	}
	got := mustDownload[float32](t, e, out, 12*n)
	for th := 0; th < n; th++ {
		for c := 0; c < 3; c++ {
			floats := 1 << c
			copied := th % (floats + 1) // src-size in floats
			for i := 0; i < 4; i++ {
				want := float32(-7)
				switch {
				case i < copied:
					want = src[12*th+4*c+i]
				case i < floats:
					want = 0
				}
				if v := got[12*th+4*c+i]; v != want {
					t.Fatalf("thread %d, %d-byte copy with src-size %d, element %d: %v, want %v", th, 4*floats,
						4*copied, i, v, want)
				}
			}
		}
	}
}

// misuseErr checks the launch error of misuse case kind: none where want is "", else one that says want. It reports
// whether the launch ran cleanly, so that the caller goes on to check the case's output.
func misuseErr(t *testing.T, kind int, want string, err error) bool {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("kind %d: %v", kind, err)
	case want != "" && (err == nil || !strings.Contains(err.Error(), want)):
		t.Errorf("kind %d: error %v, want one saying %q", kind, err, want)
	}
	return want == "" && err == nil
}

func TestEmuCpAsyncMisuse(t *testing.T) {
	e := newTestEmu(t)
	const n = 32
	src := mustAlloc(t, e, make([]float32, 4*n))
	for kind, want := range map[int]string{
		0: "",
		1: "committed groups not waited for",
		2: "1 uncommitted copies",
		3: "shared destination not aligned",
		4: "destination outside the block's dynamic shared memory",
		5: "source is not a global address",
		6: "cp-size must be 4, 8 or 16",
		7: "src-size outside [0, cp-size]",
		8: "",
	} {
		out := mustAlloc(t, e, make([]float32, 4*n))
		err := e.Launch("emu_test_cp_async_misuse", Dim3{1, 1, 1}, Dim3{n, 1, 1}, 4*n*4, Ptr(src), Ptr(out), I32(int32(kind)))
		if !misuseErr(t, kind, want, err) {
			continue
		}
		if kind == 8 {
			// Read before the wait: the destination still holds the emulator's NaN marker.
			if v := mustDownload[float32](t, e, out, n)[3]; !math.IsNaN(float64(v)) {
				t.Errorf("kind 8: a read before cp.async.wait_group returned %v, want the NaN marker", v)
			}
		}
	}
}

func TestEmuMMAMisuse(t *testing.T) {
	e := newTestEmu(t)
	for kind, want := range map[int]string{
		0: "",
		1: "an A operand is not a TF32 value",
		2: "not all 32 lanes of the warp",
	} {
		out := mustAlloc(t, e, make([]float32, 64))
		err := e.Launch("emu_test_mma_misuse", Dim3{1, 1, 1}, Dim3{64, 1, 1}, 0, Ptr(out), I32(int32(kind)))
		if !misuseErr(t, kind, want, err) {
			continue
		}
		switch {
		case kind == 0:
			for i, v := range mustDownload[float32](t, e, out, 64) {
				if v != 8 {
					t.Fatalf("lane %d: d0 = %v, want 8 (a row of eight 1·1 products)", i, v)
				}
			}
		}
	}
}

func TestEmuLdmatrixMisuse(t *testing.T) {
	e := newTestEmu(t)
	for kind, want := range map[int]string{
		0: "",
		1: "not 16-byte aligned",
		2: "outside the block's dynamic shared memory",
	} {
		out := mustAlloc(t, e, make([]float32, 32))
		err := e.Launch("emu_test_ldmatrix_misuse", Dim3{1, 1, 1}, Dim3{32, 1, 1}, 32*16, Ptr(out), I32(int32(kind)))
		if !misuseErr(t, kind, want, err) {
			continue
		}
		switch {
		case kind == 0:
			// Register 0 of lane l: matrix 0 (rows of lanes 0..7), element (l / 4, l % 4) = 4·(l / 4) + l % 4 = l.
			for l, v := range mustDownload[float32](t, e, out, 32) {
				if v != float32(l) {
					t.Fatalf("lane %d: %v, want %d", l, v, l)
				}
			}
		}
	}
}
