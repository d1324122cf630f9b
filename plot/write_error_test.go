package plot

import (
	"bytes"
	"errors"
	"syscall"
	"testing"
)

type fullWriter struct{ n int }

func (f *fullWriter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		k := f.n
		f.n = 0
		return k, syscall.ENOSPC
	}
	f.n -= len(p)
	return len(p), nil
}

// TestLossWriteErrorIsReturned: a loss plot whose writer fails part-way (a full disk) returns that error.
func TestLossWriteErrorIsReturned(t *testing.T) {
	var whole bytes.Buffer
	if err := Loss(&whole, []int{1, 10, 20}, []float64{1, 0.5, 0.3}, 200, 120); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 50, whole.Len() / 2, whole.Len() - 1} {
		err := Loss(&fullWriter{n: n}, []int{1, 10, 20}, []float64{1, 0.5, 0.3}, 200, 120)
		if !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("cut after %d bytes: %v, want ENOSPC", n, err)
		}
	}
}
