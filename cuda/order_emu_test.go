//go:build !cuda

package cuda

import (
	"fmt"
	"os"
	"testing"
)

// Tests of the emulator's schedules (SetEmuOrder, DDPM_EMU_ORDER). `make test-emu-orders` runs the whole package
// under the reverse and random orders; these tests pin what each order does with a deliberately racy kernel.

// withOrder runs f with the emulator in order spec and restores the previous order afterwards.
func withOrder(t *testing.T, spec string, f func()) {
	t.Helper()
	prev := EmuOrder()
	if err := SetEmuOrder(spec); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := SetEmuOrder(prev); err != nil {
			t.Fatalf("restoring order %s: %v", prev, err)
		}
	}()
	f()
}

// TestEmuOrderCatchesMissingSync: emu_test_missing_sync (kernels/emu/selftest.cu) reads a neighbour's shared slot
// without a barrier. Thread-id order hides the bug; reverse order and every random seed tried must expose it.
func TestEmuOrderCatchesMissingSync(t *testing.T) {
	e := newTestEmu(t)
	const grid, block = 3, 256
	in := make([]float32, grid*block)
	for i := range in {
		in[i] = float32(i + 1)
	}
	dIn := mustAlloc(t, e, in)
	dOut := mustAlloc(t, e, make([]float32, grid*block))
	// wrong counts the outputs that differ from the race-free result out[b*block+t] = in[b*block+max(t-1, 0)].
	wrong := func(spec string) int {
		n := 0
		withOrder(t, spec, func() {
			if err := e.Launch("emu_test_missing_sync", Dim3{X: grid}, Dim3{X: block}, 0, Ptr(dIn), Ptr(dOut)); err != nil {
				t.Fatal(err)
			}
		})
		got := mustDownload[float32](t, e, dOut, grid*block)
		for b := 0; b < grid; b++ {
			for i := 0; i < block; i++ {
				if want := in[b*block+max(i-1, 0)]; got[b*block+i] != want {
					n++
				}
			}
		}
		return n
	}
	if n := wrong("forward"); n != 0 {
		t.Errorf("forward order: %d wrong outputs; thread-id order should hide the missing __syncthreads", n)
	}
	if n := wrong("reverse"); n != grid*(block-1) {
		t.Errorf("reverse order: %d wrong outputs, want %d (every thread but thread 0 reads before its neighbour writes)",
			n, grid*(block-1))
	}
	for seed := 1; seed <= 5; seed++ {
		spec := fmt.Sprintf("random:%d", seed)
		if n := wrong(spec); n == 0 {
			t.Errorf("%s: the missing __syncthreads went unnoticed", spec)
		}
	}
}

// TestEmuOrderPoisonsStaticShared: in the reverse and random orders a block finds its static __shared__ array full
// of 0xFF bytes; in forward order it finds what the previous block on the OS thread left (or zeros).
func TestEmuOrderPoisonsStaticShared(t *testing.T) {
	if n := emuSharedPoisonBytes(); n < 256*4 {
		t.Fatalf("the emulator poisons %d bytes of static shared memory, want at least emu_test_shared_uninit's 1024", n)
	}
	e := newTestEmu(t)
	const grid, block = 8, 256
	out := mustAlloc(t, e, make([]uint32, grid*block))
	run := func(spec string) []uint32 {
		withOrder(t, spec, func() {
			if err := e.Launch("emu_test_shared_uninit", Dim3{X: grid}, Dim3{X: block}, 0, Ptr(out)); err != nil {
				t.Fatal(err)
			}
		})
		return mustDownload[uint32](t, e, out, grid*block)
	}
	run("forward") // leaves 0x12345678 behind on the workers it ran on
	stale := 0
	for i, v := range run("forward") {
		if v != 0 && v != 0x12345678 && v != 0xFFFFFFFF {
			t.Fatalf("forward order: element %d is %#x, want what an earlier block left: 0 (none), 0x12345678 "+
				"(emu_test_shared_uninit) or 0xFFFFFFFF (a poisoning order)", i, v)
		}
		if v == 0x12345678 {
			stale++
		}
	}
	if stale == 0 {
		t.Error("forward order: no block saw the previous block's shared data; the poisoning test below proves nothing")
	}
	for _, spec := range []string{"reverse", "random:7"} {
		for i, v := range run(spec) {
			if v != 0xFFFFFFFF {
				t.Fatalf("%s order: element %d of static shared memory is %#x at block start, want 0xFFFFFFFF", spec, i, v)
			}
		}
	}
}

// TestEmuOrderOtherKernelsAgree: the race-free self-test kernels give the same results in every order.
func TestEmuOrderOtherKernelsAgree(t *testing.T) {
	e := newTestEmu(t)
	const grid, block = 5, 100
	for _, spec := range []string{"forward", "reverse", "random:3"} {
		out := mustAlloc(t, e, make([]int32, grid*block))
		counts := mustAlloc(t, e, make([]int32, 3*grid))
		withOrder(t, spec, func() {
			if err := e.Launch("emu_test_barrier", Dim3{X: grid}, Dim3{X: block}, 0, Ptr(out), Ptr(counts)); err != nil {
				t.Fatal(err)
			}
		})
		got := mustDownload[int32](t, e, out, grid*block)
		for b := 0; b < grid; b++ {
			for i := 0; i < block; i++ {
				if want := int32((i+1)%block + 1000*b); got[b*block+i] != want {
					t.Fatalf("%s: block %d thread %d read %d, want %d", spec, b, i, got[b*block+i], want)
				}
			}
		}
	}
}

func TestEmuOrderSpecs(t *testing.T) {
	// Reading the variable here also puts it in go test's cache key (the emulator reads it from C, unseen by Go).
	t.Logf("DDPM_EMU_ORDER=%q; the emulator runs in order %s", os.Getenv("DDPM_EMU_ORDER"), EmuOrder())
	prev := EmuOrder()
	t.Cleanup(func() { SetEmuOrder(prev) })
	for _, bad := range []string{"backwards", "random:", "random:x", "random:-1", "reverse:3"} {
		if err := SetEmuOrder(bad); err == nil {
			t.Errorf("SetEmuOrder(%q) accepted", bad)
		}
	}
	for _, good := range []string{"forward", "reverse", "random", "random:18446744073709551615"} {
		if err := SetEmuOrder(good); err != nil {
			t.Errorf("SetEmuOrder(%q): %v", good, err)
		} else if got := EmuOrder(); got != good {
			t.Errorf("after SetEmuOrder(%q), EmuOrder() = %q", good, got)
		}
	}
}
