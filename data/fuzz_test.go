package data

import (
	"bytes"
	"image"
	"image/color"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzReadIDX: ReadIDX never panics; what it accepts holds exactly prod(dims) elements, and re-encoding a raw
// (non-gzip) input gives back the input. Seeds: f.Add below and testdata/fuzz/FuzzReadIDX.
func FuzzReadIDX(f *testing.F) {
	f.Add(encodeIDX([]int{2, 3, 3}, synthIDX(2, 3, 3)))
	f.Add(encodeIDX([]int{4}, []uint8{9, 0, 0, 3}))
	f.Add(gzipBytes(f, encodeIDX([]int{1, 2, 2}, []uint8{1, 2, 3, 4})))
	f.Add([]byte{0, 0, 8, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0x1f, 0x8b})
	f.Fuzz(func(t *testing.T, data []byte) {
		dims, elems, err := ReadIDX(bytes.NewReader(data), "fuzz-input")
		if err != nil {
			if !strings.Contains(err.Error(), "fuzz-input") {
				t.Fatalf("error does not name the input: %v", err)
			}
			return
		}
		total := 1
		for _, d := range dims {
			total *= d
		}
		if len(dims) < 1 || len(dims) > 4 || len(elems) != total {
			t.Fatalf("accepted dims %v with %d elements", dims, len(elems))
		}
		if len(data) >= 2 && data[0] == 0x1f && data[1] == 0x8b {
			return // gzip: the compressed bytes are not canonical
		}
		if again := encodeIDX(dims, elems); !bytes.Equal(again, data) {
			t.Fatalf("re-encoding gives %d bytes, input had %d", len(again), len(data))
		}
	})
}

// FuzzReadPack: DecodePack never panics, and what it accepts re-encodes to exactly the input (the format has one
// encoding per dataset). Seeds: f.Add below and testdata/fuzz/FuzzReadPack.
func FuzzReadPack(f *testing.F) {
	for _, m := range []*Images{synthImages(2, 1, 2, 3), synthImages(1, 3, 1, 1)} {
		b, err := EncodePack(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)-1])
	}
	f.Add([]byte("DDPMPACK"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodePack(data, "fuzz-input")
		if err != nil {
			if !strings.Contains(err.Error(), "fuzz-input") {
				t.Fatalf("error does not name the input: %v", err)
			}
			return
		}
		again, err := EncodePack(m)
		if err != nil {
			t.Fatalf("accepted pack does not re-encode: %v", err)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("re-encoding gives %d bytes, input had %d", len(again), len(data))
		}
	})
}

// FuzzLoadFolder: a folder holding one file of arbitrary bytes loads as one 3×8×8 image or fails with an error
// naming that file (it is a bad file); it never panics, and with SkipBad a bad file is skipped and listed instead.
// Seeds: the odd kinds of TestFolderOddFiles (f.Add below) and testdata/fuzz/FuzzLoadFolder.
func FuzzLoadFolder(f *testing.F) {
	f.Add(encodePNG(f, constNRGBA(3, 5, color.NRGBA{1, 2, 3, 255})))
	f.Add(encodePNG(f, constNRGBA(4, 4, color.NRGBA{200, 0, 9, 30})))
	f.Add(encodeJPEG(f, image.NewGray(image.Rect(0, 0, 9, 7))))
	f.Add(encodePNG(f, image.NewRGBA64(image.Rect(0, 0, 2, 2))))
	f.Add(hugePNG(f, 1<<20, 1<<20))
	if b, err := os.ReadFile(filepath.Join("testdata", "odd", "cmyk.jpg")); err == nil {
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte("\x89PNG\r\n\x1a\n"))
	dir := f.TempDir() // one per worker process, reused: a t.TempDir per input slows fuzzing to a crawl
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(dir, "x.png")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		m, bad, err := LoadFolder(dir, Options{Size: 8, Workers: 1})
		if err != nil {
			if !strings.Contains(err.Error(), p) || len(bad) != 0 {
				t.Fatalf("error does not name the file, or lists skipped files without SkipBad: %v %v", err, bad)
			}
			_, bad, err2 := LoadFolder(dir, Options{Size: 8, Workers: 1, SkipBad: true})
			if err2 == nil || len(bad) != 1 || bad[0].Path != p {
				t.Fatalf("SkipBad over one bad file: err %v, skipped %v", err2, bad)
			}
			return
		}
		if m.Len() != 1 || m.C != 3 || m.H != 8 || m.W != 8 || len(bad) != 0 {
			t.Fatalf("accepted as %d images %dx%dx%d, skipped %v", m.Len(), m.C, m.H, m.W, bad)
		}
	})
}
