package main

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ddpmgo/ddpm/data"
)

// idxFile writes a gzip'd IDX images file of n 28×28 images (pixel = image index + column) by hand.
func idxFile(t *testing.T, dir string, n int) string {
	t.Helper()
	var raw bytes.Buffer
	raw.Write([]byte{0, 0, 8, 3})
	for _, d := range []uint32{uint32(n), 28, 28} {
		binary.Write(&raw, binary.BigEndian, d)
	}
	for i := 0; i < n; i++ {
		for p := 0; p < 28*28; p++ {
			raw.WriteByte(byte(i + p%28))
		}
	}
	var z bytes.Buffer
	w := gzip.NewWriter(&z)
	w.Write(raw.Bytes())
	w.Close()
	path := filepath.Join(dir, "train-images-idx3-ubyte.gz")
	if err := os.WriteFile(path, z.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func runPack(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = run(args, &o, &e)
	return code, o.String(), e.String()
}

func TestPackIDX(t *testing.T) {
	dir := t.TempDir()
	idxFile(t, dir, 5)
	out := filepath.Join(t.TempDir(), "f.pack")
	code, stdout, stderr := runPack("-in", dir, "-out", out, "-max", "3")
	if code != 0 {
		t.Fatalf("exit %d, stderr %s", code, stderr)
	}
	if lines := strings.Split(strings.TrimSpace(stdout), "\n"); len(lines) != 1 || !strings.Contains(lines[0], "3 images 1x32x32") {
		t.Fatalf("summary %q, want one line with 3 images 1x32x32 (default -pad 32)", stdout)
	}
	m, err := data.ReadPack(out)
	if err != nil {
		t.Fatal(err)
	}
	// Image 2, row 0 of the original sits at padded row 2, columns 2..29: values 2 + x.
	if m.Len() != 3 || m.At(2)[2*32+2] != 2 || m.At(2)[2*32+29] != 2+27 || m.At(2)[0] != 0 {
		t.Fatalf("packed images wrong: %dx%dx%dx%d", m.Len(), m.C, m.H, m.W)
	}
}

func TestPackExitCodes(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "o.pack")
	for _, tc := range []struct {
		args []string
		code int
		says string
	}{
		{[]string{"-h"}, 0, "usage: pack"},
		{[]string{}, 2, "-in is required"},
		{[]string{"-in", dir}, 2, "-out is required"},
		{[]string{"-in", dir, "-out", out, "extra"}, 2, "unexpected argument"},
		{[]string{"-in", dir, "-out", out, "-channels", "2"}, 2, "-channels"},
		{[]string{"-in", dir, "-out", out, "-size", "0"}, 2, "-size"},
		{[]string{"-bogus"}, 2, "flag provided but not defined"},
		{[]string{"-in", filepath.Join(dir, "missing"), "-out", out}, 1, "does not exist"},
		{[]string{"-in", dir, "-out", out}, 1, "no .jpg"}, // an empty folder
	} {
		code, _, stderr := runPack(tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.says) {
			t.Errorf("pack %q: exit %d, stderr %q; want exit %d and %q", tc.args, code, stderr, tc.code, tc.says)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("a failed run left an output file")
	}
}

func TestPackSkipBadListsFiles(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "a.jpg"), []byte("not a jpeg"), 0o644)
	os.WriteFile(filepath.Join(dir, "b.png"), nil, 0o644)
	out := filepath.Join(t.TempDir(), "o.pack")
	code, _, stderr := runPack("-in", dir, "-out", out)
	if code != 1 || !strings.Contains(stderr, "a.jpg") || !strings.Contains(stderr, "-skip-bad") {
		t.Fatalf("without -skip-bad: exit %d, stderr %q", code, stderr)
	}
	code, _, stderr = runPack("-in", dir, "-out", out, "-skip-bad")
	if code != 1 || !strings.Contains(stderr, "skipped") || !strings.Contains(stderr, "b.png") || !strings.Contains(stderr, "all 2 image files are bad") {
		t.Fatalf("with -skip-bad and only bad files: exit %d, stderr %q", code, stderr)
	}
}
