// Package faultio holds the failing writer the tests use to inject I/O errors, such
// as a disk that fills up part-way through a file.
package faultio

import (
	"io"
	"syscall"
)

// Writer passes the first N bytes to W (dropped when W is nil) and then fails every
// write with Err (syscall.ENOSPC, "no space left on device", when Err is nil).
type Writer struct {
	W   io.Writer
	N   int
	Err error
}

func (f *Writer) Write(p []byte) (int, error) {
	if len(p) <= f.N {
		f.N -= len(p)
		return f.forward(p)
	}
	k, _ := f.forward(p[:f.N])
	f.N = 0
	if f.Err == nil {
		return k, syscall.ENOSPC
	}
	return k, f.Err
}

func (f *Writer) forward(p []byte) (int, error) {
	if f.W == nil {
		return len(p), nil
	}
	return f.W.Write(p)
}
