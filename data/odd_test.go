package data

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// hugePNG is a PNG whose header claims w×h pixels: a real 1×1 PNG with the IHDR's size fields rewritten and its
// CRC recomputed, so that image.DecodeConfig accepts it and only the pixel limit can refuse it.
func hugePNG(t testing.TB, w, h uint32) []byte {
	t.Helper()
	b := encodePNG(t, constNRGBA(1, 1, color.NRGBA{1, 2, 3, 255}))
	// 8-byte signature, then IHDR: length (4), "IHDR" (4), width (4), height (4), 5 more bytes, CRC (4).
	if string(b[12:16]) != "IHDR" {
		t.Fatalf("unexpected PNG layout % x", b[:16])
	}
	binary.BigEndian.PutUint32(b[16:], w)
	binary.BigEndian.PutUint32(b[20:], h)
	binary.BigEndian.PutUint32(b[29:], crc32.ChecksumIEEE(b[12:29]))
	return b
}

// TestFolderOddFiles runs each odd kind of file of an image folder alone through LoadFolder, with and without
// SkipBad, and checks the documented policy: gray and CMYK JPEGs, PNGs with alpha and 16-bit PNGs are converted
// (to the RGB an independent conversion gives); a zero-byte file, a non-image, an image over the pixel limit and
// a symlink loop are bad files (named in the error, or skipped and listed).
func TestFolderOddFiles(t *testing.T) {
	cmyk, err := os.ReadFile(filepath.Join("testdata", "odd", "cmyk.jpg"))
	if err != nil {
		t.Fatal(err)
	}
	deep := image.NewRGBA64(image.Rect(0, 0, 20, 20))
	for i := 0; i < 400; i++ {
		deep.SetRGBA64(i%20, i/20, color.RGBA64{0x12FF, 0xAB00, 0x7F80, 0xFFFF})
	}
	gray := image.NewGray(image.Rect(0, 0, 24, 16))
	for i := range gray.Pix {
		gray.Pix[i] = 170
	}
	type oddCase struct {
		name string
		file []byte // nil with loop: a symlink to itself
		loop bool
		// converted: the RGB every output pixel must have (± tol); otherwise why names the reason it is bad.
		rgb [3]uint8
		tol int
		why string
	}
	cases := []oddCase{
		// CMYK (0, 128, 255, 0) is R = 255·(1−0)(1−0) = 255, G = 255·(1−128/255) = 127, B = 0.
		{name: "cmyk.jpg", file: cmyk, rgb: [3]uint8{255, 127, 0}, tol: 3},
		{name: "gray.jpg", file: encodeJPEG(t, gray), rgb: [3]uint8{170, 170, 170}, tol: 1},
		// 16-bit: the high byte of each channel.
		{name: "deep.png", file: encodePNG(t, deep), rgb: [3]uint8{0x12, 0xAB, 0x7F}, tol: 0},
		// Alpha 51/255 = 0.2 over black: premultiplied (250, 100, 50)·0.2 = (50, 20, 10).
		{name: "alpha.png", file: encodePNG(t, constNRGBA(12, 12, color.NRGBA{250, 100, 50, 51})), rgb: [3]uint8{50, 20, 10}, tol: 1},
		{name: "empty.png", file: []byte{}, why: "empty file"},
		{name: "notes.jpg", file: []byte("not an image at all\n"), why: "not a decodable"},
		{name: "huge.png", file: hugePNG(t, 100000, 100000), why: "pixel limit"},
		{name: "loop.png", loop: true, why: "symbolic links"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			p := filepath.Join(dir, c.name)
			if c.loop {
				if err := os.Symlink(c.name, p); err != nil {
					t.Fatal(err)
				}
			} else {
				writeFile(t, p, c.file)
			}
			// A good image after it, so that SkipBad has something to keep.
			writeFile(t, filepath.Join(dir, "zz_good.png"), encodePNG(t, constNRGBA(10, 10, color.NRGBA{9, 9, 9, 255})))
			m, bad, err := LoadFolder(dir, Options{Size: 4})
			if c.why == "" {
				if err != nil || len(bad) != 0 {
					t.Fatalf("convertible file refused: %v %v", err, bad)
				}
				checkConstImages(t, &Images{C: 3, H: 4, W: 4, Pix: m.Pix[:48]}, []goodFile{{c.name, c.rgb, c.tol}})
				return
			}
			var bf BadFile
			if err == nil || !errors.As(err, &bf) || bf.Path != p || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), c.why) {
				t.Fatalf("without SkipBad: err = %v; want the file %s named with %q", err, p, c.why)
			}
			m, bad, err = LoadFolder(dir, Options{Size: 4, SkipBad: true})
			if err != nil || m.Len() != 1 || len(bad) != 1 || bad[0].Path != p || !strings.Contains(bad[0].Err.Error(), c.why) {
				t.Fatalf("with SkipBad: %v, %d images, skipped %v", err, m.Len(), bad)
			}
		})
	}
}

// TestIDXShrinkMatchesFolderResize: IDX images larger than Size are shrunk with the folder filter. A 28×28 gray
// picture loaded as IDX with Size 16 must equal (within rounding of the luma weights) the same picture loaded from
// a PNG folder at Size 16, and smaller-than-Size IDX images are left at their size.
func TestIDXShrinkMatchesFolderResize(t *testing.T) {
	const n, s = 2, 28
	pix := synthIDX(n, s, s)
	p := writeFile(t, filepath.Join(t.TempDir(), "im"), encodeIDX([]int{n, s, s}, pix))
	m, err := LoadFashionMNIST(p, Options{Size: 16})
	if err != nil {
		t.Fatal(err)
	}
	if m.Len() != n || m.C != 1 || m.H != 16 || m.W != 16 {
		t.Fatalf("shape %dx%dx%dx%d, want %dx1x16x16", m.Len(), m.C, m.H, m.W, n)
	}
	for i := 0; i < n; i++ {
		dir := t.TempDir()
		g := image.NewGray(image.Rect(0, 0, s, s))
		copy(g.Pix, pix[i*s*s:(i+1)*s*s])
		writeFile(t, filepath.Join(dir, "a.png"), encodePNG(t, g))
		f, _, err := LoadFolder(dir, Options{Size: 16, Channels: 1})
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range m.At(i) {
			if d := int(v) - int(f.Pix[k]); d < -1 || d > 1 {
				t.Fatalf("image %d pixel %d: IDX shrink %d, folder resize %d", i, k, v, f.Pix[k])
			}
		}
	}
	if bytes.Equal(m.At(0), m.At(1)) {
		t.Error("different images shrank to the same pixels")
	}
	// Pad first, then shrink; and Size ≥ the side leaves the images as they are.
	m2, err := LoadFashionMNIST(p, Options{Pad: 32, Size: 16})
	if err != nil || m2.H != 16 {
		t.Fatalf("pad 32 then size 16: %v %v", m2, err)
	}
	m3, err := LoadFashionMNIST(p, Options{Size: 32})
	if err != nil || m3.H != s || !bytes.Equal(m3.Pix, pix) {
		t.Fatalf("size 32 changed 28×28 images: %v", err)
	}
}

// TestIDXBitFlipRefused: the raw IDX format has no checksum (a flipped pixel bit in a raw file is undetectable, and
// a flipped header is caught by the size checks of TestIDXRefusesTruncated), but gzip'd IDX files (what
// dataset-fashion-mnist installs) carry gzip's CRC-32 and length of the uncompressed data, so a flipped bit is
// refused, naming the file, unless it leaves the data intact (the unused padding bits after deflate's last block).
func TestIDXBitFlipRefused(t *testing.T) {
	raw := encodeIDX([]int{4, 6, 6}, synthIDX(4, 6, 6))
	z := gzipBytes(t, raw)
	dir := t.TempDir()
	// Every bit of the compressed stream after the 10-byte gzip header (whose flips may be harmless: mtime, OS).
	refused := 0
	for i := 10; i < len(z); i++ {
		for bit := 0; bit < 8; bit++ {
			b := bytes.Clone(z)
			b[i] ^= 1 << bit
			p := filepath.Join(dir, "train-images-idx3-ubyte.gz")
			writeFile(t, p, b)
			m, err := LoadFashionMNIST(p, Options{})
			if err == nil {
				if !bytes.Equal(m.Pix, raw[16:]) {
					t.Fatalf("byte %d bit %d flipped: accepted with other pixels", i, bit)
				}
				continue
			}
			if !strings.Contains(err.Error(), p) {
				t.Fatalf("byte %d bit %d: error does not name the file: %v", i, bit, err)
			}
			refused++
		}
	}
	t.Logf("%d single-bit flips refused", refused)
}

// TestCountMatchesOpen: Count, from headers and listings only, gives the number of images Open loads (for a
// folder without bad files), for every kind of source, with and without MaxItems.
func TestCountMatchesOpen(t *testing.T) {
	dir := t.TempDir()
	idx := writeFile(t, filepath.Join(dir, "im.gz"), gzipBytes(t, encodeIDX([]int{5, 3, 3}, synthIDX(5, 3, 3))))
	folder := filepath.Join(dir, "f")
	os.Mkdir(folder, 0o755)
	for _, name := range []string{"a.png", "b.png", "c.png"} {
		writeFile(t, filepath.Join(folder, name), encodePNG(t, constNRGBA(6, 6, color.NRGBA{1, 2, 3, 255})))
	}
	pack := filepath.Join(dir, "x.pack")
	if err := WritePack(pack, synthImages(7, 1, 2, 2)); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{idx, folder, pack} {
		for _, maxItems := range []int{0, 2} {
			opts := Options{Size: 4, MaxItems: maxItems}
			m, _, err := Open(p, opts)
			if err != nil {
				t.Fatal(err)
			}
			n, err := Count(p, opts)
			if err != nil || n != m.Len() {
				t.Errorf("%s max %d: Count %d (%v), Open loads %d", p, maxItems, n, err, m.Len())
			}
		}
	}
	if _, err := Count(filepath.Join(dir, "missing"), Options{}); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("missing path: %v", err)
	}
}
