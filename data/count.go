package data

import (
	"bufio"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"io"
	"os"
)

// Count says how many images Open(path, opts) would load, reading only headers and folder listings (no pixels):
// the N of a pack header, the first dimension of an IDX header, or the number of image files in a folder (bad
// files included, so it is an upper bound there), capped at MaxItems. bin/train -dry-run uses it to estimate the
// memory of the data set before loading it.
func Count(path string, opts Options) (int, error) {
	n, err := count(path)
	if err != nil {
		return 0, err
	}
	if opts.MaxItems > 0 && opts.MaxItems < n {
		n = opts.MaxItems
	}
	return n, nil
}

func count(path string) (int, error) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, fmt.Errorf("data: count %s: %w", path, err)
	}
	if st.IsDir() {
		if f := findIDXImages(path); f != "" {
			return idxCount(f)
		}
		files, err := ImageFiles(path)
		return len(files), err
	}
	kind, err := sniff(path)
	if err != nil {
		return 0, err
	}
	if kind == KindIDX {
		return idxCount(path)
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("data: count %s: %w", path, err)
	}
	defer f.Close()
	var hb [PackHeaderSize]byte
	if _, err := io.ReadFull(f, hb[:]); err != nil {
		return 0, fmt.Errorf("data: pack %s: reading header: %w", path, noEOF(err))
	}
	return int(binary.LittleEndian.Uint32(hb[12:])), nil
}

// idxCount reads the first dimension of an IDX file's header (through gzip when compressed).
func idxCount(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("data: IDX %s: %w", path, err)
	}
	defer f.Close()
	br := bufio.NewReader(f)
	var r io.Reader = br
	if head, _ := br.Peek(2); len(head) == 2 && head[0] == 0x1f && head[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return 0, fmt.Errorf("data: IDX %s: gzip: %w", path, err)
		}
		defer zr.Close()
		r = zr
	}
	var h [8]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, fmt.Errorf("data: IDX %s: truncated header: %w", path, noEOF(err))
	}
	if h[0] != 0 || h[1] != 0 || h[2] != idxTypeUint8 || h[3] < 1 {
		return 0, fmt.Errorf("data: IDX %s: wrong magic % x", path, h[:4])
	}
	return int(binary.BigEndian.Uint32(h[4:])), nil
}
