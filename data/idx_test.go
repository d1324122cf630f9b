package data

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// encodeIDX builds an unsigned-byte IDX file by hand from the format description (not with code under test).
func encodeIDX(dims []int, elems []uint8) []byte {
	var b bytes.Buffer
	b.Write([]byte{0, 0, 0x08, byte(len(dims))})
	for _, d := range dims {
		binary.Write(&b, binary.BigEndian, uint32(d))
	}
	b.Write(elems)
	return b.Bytes()
}

func gzipBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var z bytes.Buffer
	w := gzip.NewWriter(&z)
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return z.Bytes()
}

func writeFile(t testing.TB, path string, b []byte) string {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// synthIDX returns n images of h×w where pixel (i, y, x) = (7i + 3y + x) mod 256, a pattern whose every image and
// position differs from its neighbours so that a shifted or transposed read shows.
func synthIDX(n, h, w int) []uint8 {
	p := make([]uint8, n*h*w)
	for i := 0; i < n; i++ {
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				p[(i*h+y)*w+x] = uint8(7*i + 3*y + x)
			}
		}
	}
	return p
}

func TestIDXRoundTripRawAndGzip(t *testing.T) {
	const n, h, w = 5, 6, 4
	pix := synthIDX(n, h, w)
	raw := encodeIDX([]int{n, h, w}, pix)
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		b    []byte
	}{{"raw-idx3-ubyte", raw}, {"gz-idx3-ubyte.gz", gzipBytes(t, raw)}, {"gz-named-without-suffix", gzipBytes(t, raw)}} {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, filepath.Join(dir, tc.name), tc.b)
			dims, elems, err := ReadIDXFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if len(dims) != 3 || dims[0] != n || dims[1] != h || dims[2] != w {
				t.Fatalf("dims %v, want [%d %d %d]", dims, n, h, w)
			}
			if !bytes.Equal(elems, pix) {
				t.Fatalf("elements differ from what was written")
			}
			m, err := LoadFashionMNIST(p, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if m.Len() != n || m.C != 1 || m.H != h || m.W != w || !bytes.Equal(m.Pix, pix) {
				t.Fatalf("LoadFashionMNIST: %dx%dx%dx%d, pixels equal %v", m.Len(), m.C, m.H, m.W, bytes.Equal(m.Pix, pix))
			}
		})
	}
}

func TestIDXLabels(t *testing.T) {
	labels := []uint8{9, 0, 0, 3, 0, 2}
	p := writeFile(t, filepath.Join(t.TempDir(), "labels"), gzipBytes(t, encodeIDX([]int{len(labels)}, labels)))
	dims, elems, err := ReadIDXFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(dims) != 1 || dims[0] != len(labels) || !bytes.Equal(elems, labels) {
		t.Fatalf("got dims %v elems %v", dims, elems)
	}
	// Labels are not images: loading them as Fashion-MNIST images must fail, naming the file.
	if _, err := LoadFashionMNIST(p, Options{}); err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("labels loaded as images: err = %v", err)
	}
}

func TestIDXPadAndChannels(t *testing.T) {
	const n, h, w = 3, 4, 5
	pix := synthIDX(n, h, w)
	for i := range pix {
		pix[i] |= 1 // no zero pixels inside, so the zero border is distinguishable
	}
	p := writeFile(t, filepath.Join(t.TempDir(), "im"), encodeIDX([]int{n, h, w}, pix))
	const pad = 8 // top = (8-4)/2 = 2, left = (8-5)/2 = 1
	m, err := LoadFashionMNIST(p, Options{Pad: pad, Channels: 3, MaxItems: 2})
	if err != nil {
		t.Fatal(err)
	}
	if m.Len() != 2 || m.C != 3 || m.H != pad || m.W != pad {
		t.Fatalf("shape %dx%dx%dx%d, want 2x3x%dx%d", m.Len(), m.C, m.H, m.W, pad, pad)
	}
	for i := 0; i < 2; i++ {
		for c := 0; c < 3; c++ {
			for y := 0; y < pad; y++ {
				for x := 0; x < pad; x++ {
					got := m.At(i)[(c*pad+y)*pad+x]
					want := uint8(0)
					if sy, sx := y-2, x-1; sy >= 0 && sy < h && sx >= 0 && sx < w {
						want = pix[(i*h+sy)*w+sx]
					}
					if got != want {
						t.Fatalf("image %d channel %d (%d,%d) = %d, want %d", i, c, y, x, got, want)
					}
				}
			}
		}
	}
	if _, err := LoadFashionMNIST(p, Options{Pad: 3}); err == nil || !strings.Contains(err.Error(), "pad") {
		t.Fatalf("pad smaller than the image accepted: %v", err)
	}
}

func TestIDXRefusesTruncated(t *testing.T) {
	raw := encodeIDX([]int{4, 3, 3}, synthIDX(4, 3, 3))
	dir := t.TempDir()
	cases := map[string][]byte{
		"short-body":      raw[:len(raw)-1],
		"short-dims":      raw[:9],
		"short-magic":     raw[:2],
		"empty":           {},
		"gzip-short-body": gzipBytes(t, raw[:len(raw)-5]),
		"gzip-cut":        gzipBytes(t, raw)[:20],
	}
	for name, b := range cases {
		p := writeFile(t, filepath.Join(dir, name), b)
		_, _, err := ReadIDXFile(p)
		if err == nil {
			t.Fatalf("%s: accepted", name)
		}
		if !strings.Contains(err.Error(), p) {
			t.Errorf("%s: error does not name the file: %v", name, err)
		}
		if !strings.Contains(err.Error(), "truncated") && !strings.Contains(err.Error(), "EOF") {
			t.Errorf("%s: error does not say the file is truncated: %v", name, err)
		}
	}
	p := writeFile(t, filepath.Join(dir, "trailing"), append(raw, 0))
	if _, _, err := ReadIDXFile(p); err == nil || !strings.Contains(err.Error(), "trailing") || !strings.Contains(err.Error(), p) {
		t.Fatalf("trailing byte: err = %v", err)
	}
}

func TestIDXRefusesWrongMagic(t *testing.T) {
	raw := encodeIDX([]int{2, 2, 2}, make([]uint8, 8))
	dir := t.TempDir()
	for name, mutate := range map[string]func(b []byte){
		"nonzero-lead": func(b []byte) { b[0] = 1 },
		"float-type":   func(b []byte) { b[2] = 0x0d },
		"zero-dims":    func(b []byte) { b[3] = 0 },
		"many-dims":    func(b []byte) { b[3] = 9 },
	} {
		b := append([]byte(nil), raw...)
		mutate(b)
		p := writeFile(t, filepath.Join(dir, name), b)
		_, _, err := ReadIDXFile(p)
		if err == nil || !strings.Contains(err.Error(), p) {
			t.Fatalf("%s: err = %v, want an error naming %s", name, err, p)
		}
	}
	p := writeFile(t, filepath.Join(dir, "text"), []byte("hello, world\n"))
	if _, _, err := ReadIDXFile(p); err == nil || !strings.Contains(err.Error(), "magic") {
		t.Fatalf("text file: err = %v, want wrong magic", err)
	}
}

func TestIDXHugeHeaderOnTinyFile(t *testing.T) {
	// A header claiming 60000×2800×2800 on a 20-byte file must fail fast without allocating the claim.
	b := encodeIDX([]int{60000, 2800, 2800}, []uint8{1, 2, 3, 4})
	_, _, err := ReadIDX(bytes.NewReader(b), "huge")
	if err == nil || !strings.Contains(err.Error(), "huge") {
		t.Fatalf("err = %v", err)
	}
}

func TestFashionMNISTMissingPath(t *testing.T) {
	p := filepath.Join(t.TempDir(), "fashion-mnist")
	_, err := LoadFashionMNIST(p, Options{})
	if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "apt-get install dataset-fashion-mnist") {
		t.Fatalf("err = %v, want the path and the apt-get hint", err)
	}
	// An existing directory without the files also says how to get them.
	_, err = LoadFashionMNIST(t.TempDir(), Options{})
	if err == nil || !strings.Contains(err.Error(), "apt-get install dataset-fashion-mnist") {
		t.Fatalf("empty dir: err = %v", err)
	}
}
