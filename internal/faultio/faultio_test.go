package faultio

import (
	"bytes"
	"errors"
	"syscall"
	"testing"
)

func TestWriterFailsAfterN(t *testing.T) {
	var b bytes.Buffer
	w := &Writer{W: &b, N: 5}
	if n, err := w.Write([]byte("abc")); n != 3 || err != nil {
		t.Fatalf("first write: %d %v", n, err)
	}
	if n, err := w.Write([]byte("defg")); n != 2 || !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("second write: %d %v, want 2 bytes and ENOSPC", n, err)
	}
	if b.String() != "abcde" {
		t.Fatalf("passed %q, want the first 5 bytes", b.String())
	}
	mine := errors.New("mine")
	if _, err := (&Writer{Err: mine}).Write([]byte("x")); err != mine {
		t.Fatalf("custom error: %v", err)
	}
}
