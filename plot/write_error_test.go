package plot

import (
	"bytes"
	"errors"
	"syscall"
	"testing"

	"github.com/ddpmgo/ddpm/internal/faultio"
)

// TestLossWriteErrorIsReturned: a loss plot whose writer fails part-way (a full disk) returns that error.
func TestLossWriteErrorIsReturned(t *testing.T) {
	var whole bytes.Buffer
	if err := Loss(&whole, []int{1, 10, 20}, []float64{1, 0.5, 0.3}, 200, 120); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 50, whole.Len() / 2, whole.Len() - 1} {
		err := Loss(&faultio.Writer{N: n}, []int{1, 10, 20}, []float64{1, 0.5, 0.3}, 200, 120)
		if !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("cut after %d bytes: %v, want ENOSPC", n, err)
		}
	}
}
