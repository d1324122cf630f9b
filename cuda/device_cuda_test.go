//go:build cuda

package cuda

import "testing"

// The conformance suite (conformance_test.go) on the GPU itself: go test -tags cuda ./cuda on an NVIDIA host.

// emulated is false: testBackend is a real GPU.
const emulated = false

// testBackend returns a backend on GPU 0, closed when t ends.
func testBackend(t testing.TB) *Backend {
	t.Helper()
	d, err := Open("cuda")
	if err != nil {
		t.Fatal(err)
	}
	be, err := NewBackend(d)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := be.Close(); err != nil {
			t.Error(err)
		}
		if err := d.Close(); err != nil {
			t.Error(err)
		}
	})
	return be
}
