package imgio

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"syscall"
	"testing"

	"github.com/ddpmgo/ddpm/internal/faultio"
)

// TestWriteErrorsAreReturned: a PNG grid or npy write that fails part-way returns the writer's error (callers write
// through train.WriteAtomic, which then removes the partial temporary), wherever the disk fills up.
func TestWriteErrorsAreReturned(t *testing.T) {
	x := make([]float32, 4*3*8*8)
	for i := range x {
		x[i] = float32(i%7)/3 - 1
	}
	for name, write := range map[string]func(io.Writer) error{
		"png": func(w io.Writer) error { return WriteGridPNG(w, x, 4, 3, 8, 8) },
		"npy": func(w io.Writer) error { return WriteNPY(w, x, []int{4, 3, 8, 8}) },
	} {
		var whole bytes.Buffer
		if err := write(&whole); err != nil {
			t.Fatal(err)
		}
		size := whole.Len()
		for _, n := range []int{0, 10, size / 2, size - 1} {
			err := write(&faultio.Writer{N: n})
			if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "no space") {
				t.Errorf("%s cut after %d bytes: %v, want ENOSPC", name, n, err)
			}
		}
	}
}
