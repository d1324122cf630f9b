//go:build asan && !cuda

package cuda

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

const asanBuild = true

// Under -asan, a deliberate out-of-bounds access aborts the process, so it runs in a child test process
// (TestEmuASanChild, selected by EMU_ASAN_CHILD) and the parent checks that AddressSanitizer reported it.

// expectASanAbort runs the child case `which` and requires an ASan report that names the kernel.
func expectASanAbort(t *testing.T, which string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestEmuASanChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "EMU_ASAN_CHILD="+which)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("emulator %s under ASan: child exited cleanly, want an AddressSanitizer abort; output:\n%s", which, out)
	}
	// go test strips the binary, so the report has no symbol names; the access kind and size identify the kernel's
	// 4-byte float access (the allocation's slack is poisoned, hence "use-after-poison").
	access := map[string]string{"oob-write": "WRITE of size 4", "oob-read": "READ of size 4"}[which]
	if !strings.Contains(string(out), "ERROR: AddressSanitizer") || !strings.Contains(string(out), access) {
		t.Fatalf("emulator %s under ASan: no AddressSanitizer report of a %s; output:\n%s", which, access, out)
	}
}

func TestEmuASanChild(t *testing.T) {
	which := os.Getenv("EMU_ASAN_CHILD")
	if which == "" {
		t.Skip("helper process for expectASanAbort; runs only when EMU_ASAN_CHILD is set")
	}
	e := NewEmulator(EmuOptions{Guard: true})
	const n = 100
	in := mustAlloc(t, e, make([]float32, n))
	out := mustAlloc(t, e, make([]float32, n))
	switch which {
	case "oob-write":
		e.Launch("emu_test_oob_write", Dim3{X: 1}, Dim3{X: 128}, 0, Ptr(out), I32(n))
	case "oob-read":
		e.Launch("emu_test_oob_read", Dim3{X: 1}, Dim3{X: 128}, 0, Ptr(in), Ptr(out), I32(n))
	}
	t.Fatalf("%s: the launch returned; AddressSanitizer should have aborted the process", which)
}

// TestEmuOutOfBoundsReadIsCaughtByASan: guard bands see only writes; ASan sees the read one element past the end.
func TestEmuOutOfBoundsReadIsCaughtByASan(t *testing.T) {
	expectASanAbort(t, "oob-read")
}
