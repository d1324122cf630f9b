package data

import (
	"bytes"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func encodePNG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func encodeJPEG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 95}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func constNRGBA(w, h int, c color.NRGBA) *image.NRGBA {
	return fillRGBA(w, h, func(x, y int) color.NRGBA { return c })
}

// celebaLike is the fixture folder: 178×218 images (CelebA's size) in every format the loader converts, followed
// in name order by four bad files. good lists, per good file, the RGB every output pixel must have and the
// tolerance (JPEG is lossy).
type goodFile struct {
	name string
	rgb  [3]uint8
	tol  int
}

func celebaLike(t *testing.T) (dir string, good []goodFile, bad []string) {
	t.Helper()
	dir = t.TempDir()
	const w, h = 178, 218
	put := func(name string, b []byte) { writeFile(t, filepath.Join(dir, name), b) }

	put("01_const.png", encodePNG(t, constNRGBA(w, h, color.NRGBA{200, 100, 50, 255})))
	good = append(good, goodFile{"01_const.png", [3]uint8{200, 100, 50}, 0})

	gray := image.NewGray(image.Rect(0, 0, w, h))
	for i := range gray.Pix {
		gray.Pix[i] = 90
	}
	put("02_gray.jpg", encodeJPEG(t, gray)) // a single-component (grayscale) JPEG
	good = append(good, goodFile{"02_gray.jpg", [3]uint8{90, 90, 90}, 1})

	deep := image.NewRGBA64(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			deep.SetRGBA64(x, y, color.RGBA64{0xC0C0, 0x4000, 0x0101, 0xFFFF})
		}
	}
	put("03_16bit.png", encodePNG(t, deep)) // png.Encode writes RGBA64 as 16 bits per channel
	good = append(good, goodFile{"03_16bit.png", [3]uint8{0xC0, 0x40, 0x01}, 1})

	put("04_alpha.png", encodePNG(t, constNRGBA(w, h, color.NRGBA{255, 0, 100, 128})))
	good = append(good, goodFile{"04_alpha.png", [3]uint8{128, 0, 50}, 1}) // composited on black

	put("05_rgb.JPG", encodeJPEG(t, constNRGBA(w, h, color.NRGBA{30, 160, 220, 255})))
	good = append(good, goodFile{"05_rgb.JPG", [3]uint8{30, 160, 220}, 3})

	pal := image.NewPaletted(image.Rect(0, 0, w, h), color.Palette{color.RGBA{1, 2, 3, 255}, color.RGBA{77, 66, 55, 255}})
	for i := range pal.Pix {
		pal.Pix[i] = 1
	}
	put("06_palette.png", encodePNG(t, pal))
	good = append(good, goodFile{"06_palette.png", [3]uint8{77, 66, 55}, 0})

	// Bad files, after the good ones in name order.
	put("50_empty.png", nil)
	put("51_x.jpg", []byte("this is a text file, not a JPEG\n"))
	if err := os.Symlink("52_loop.jpg", filepath.Join(dir, "52_loop.jpg")); err != nil {
		t.Fatal(err)
	}
	put("53_small.png", encodePNG(t, constNRGBA(100, 100, color.NRGBA{1, 1, 1, 255}))) // smaller than the crop
	bad = []string{"50_empty.png", "51_x.jpg", "52_loop.jpg", "53_small.png"}

	// Ignored: other extensions and directories, even with an image-like name.
	put("list_attr_celeba.txt", []byte("202599\n"))
	if err := os.Mkdir(filepath.Join(dir, "sub.jpg"), 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, good, bad
}

func checkConstImages(t *testing.T, m *Images, good []goodFile) {
	t.Helper()
	if m.Len() != len(good) {
		t.Fatalf("%d images, want %d", m.Len(), len(good))
	}
	plane := m.H * m.W
	for i, g := range good {
		for c := 0; c < 3; c++ {
			for _, v := range m.At(i)[c*plane : (c+1)*plane] {
				if d := int(v) - int(g.rgb[c]); d < -g.tol || d > g.tol {
					t.Fatalf("image %d (%s) channel %d = %d, want %d ± %d", i, g.name, c, v, g.rgb[c], g.tol)
				}
			}
		}
	}
}

func TestFolderSkipBad(t *testing.T) {
	dir, good, bad := celebaLike(t)
	m, skipped, err := LoadFolder(dir, Options{Size: 32, Crop: 140, SkipBad: true})
	if err != nil {
		t.Fatal(err)
	}
	if m.C != 3 || m.H != 32 || m.W != 32 {
		t.Fatalf("shape %dx%dx%d, want 3x32x32", m.C, m.H, m.W)
	}
	checkConstImages(t, m, good)
	if len(skipped) != len(bad) {
		t.Fatalf("skipped %d files (%v), want %d (%v)", len(skipped), skipped, len(bad), bad)
	}
	for i, b := range skipped {
		if filepath.Base(b.Path) != bad[i] || b.Err == nil {
			t.Errorf("skipped[%d] = %v, want %s with a reason", i, b, bad[i])
		}
	}
	for _, tc := range []struct {
		i   int
		why string
	}{{0, "empty"}, {1, "not a decodable"}, {2, "symbolic links"}, {3, "smaller than"}} {
		if !strings.Contains(skipped[tc.i].Err.Error(), tc.why) {
			t.Errorf("%s: reason %q does not say %q", bad[tc.i], skipped[tc.i].Err, tc.why)
		}
	}
}

func TestFolderStopsAtFirstBadFile(t *testing.T) {
	dir, _, _ := celebaLike(t)
	for _, workers := range []int{1, 2, 3} {
		_, _, err := LoadFolder(dir, Options{Size: 32, Crop: 140, Workers: workers})
		if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "50_empty.png")) || !strings.Contains(err.Error(), "empty") {
			t.Fatalf("workers %d: err = %v, want the first bad file 50_empty.png and why", workers, err)
		}
	}
	// Each bad kind alone also fails, naming itself, and never panics.
	for _, name := range []string{"51_x.jpg", "52_loop.jpg", "53_small.png"} {
		one := t.TempDir()
		src := filepath.Join(dir, name)
		if fi, _ := os.Lstat(src); fi.Mode()&os.ModeSymlink != 0 {
			os.Symlink(name, filepath.Join(one, name))
		} else {
			b, _ := os.ReadFile(src)
			writeFile(t, filepath.Join(one, name), b)
		}
		if _, _, err := LoadFolder(one, Options{Size: 32, Crop: 140}); err == nil || !strings.Contains(err.Error(), name) {
			t.Fatalf("%s alone: err = %v", name, err)
		}
	}
}

func TestFolderMaxItemsDeterministicOrder(t *testing.T) {
	// Files named so that name order differs from creation order; file k is constant 10k+5. k = 2 is bad, so the
	// first 4 good ones are k = 0, 1, 3, 4.
	dir := t.TempDir()
	for _, k := range []int{5, 3, 0, 4, 1, 2} {
		name := filepath.Join(dir, "img_"+string(rune('a'+k))+".png")
		if k == 2 {
			writeFile(t, name, []byte("garbage"))
			continue
		}
		v := uint8(10*k + 5)
		writeFile(t, name, encodePNG(t, constNRGBA(40, 50, color.NRGBA{v, v, v, 255})))
	}
	var first *Images
	for _, workers := range []int{1, 2, 4} {
		m, skipped, err := LoadFolder(dir, Options{Size: 8, MaxItems: 4, SkipBad: true, Workers: workers, Channels: 1})
		if err != nil {
			t.Fatal(err)
		}
		if m.Len() != 4 || m.C != 1 || len(skipped) != 1 || filepath.Base(skipped[0].Path) != "img_c.png" {
			t.Fatalf("workers %d: %d images of %d channels, skipped %v", workers, m.Len(), m.C, skipped)
		}
		for i, k := range []int{0, 1, 3, 4} {
			for _, v := range m.At(i) {
				if v != uint8(10*k+5) {
					t.Fatalf("workers %d: image %d = %d, want file %d's %d", workers, i, v, k, 10*k+5)
				}
			}
		}
		if first == nil {
			first = m
		} else if !bytes.Equal(first.Pix, m.Pix) {
			t.Fatalf("workers %d gives other pixels than workers 1", workers)
		}
	}
}

func TestFolderCropAndSplit(t *testing.T) {
	// Crop 0 on a 178×218 image takes the centered 178×178 square (rows 20..197). Top half of that square (rows
	// < 109) one colour, bottom another; resized 178 → 16 the top rows stay exactly the top colour.
	dir := t.TempDir()
	img := fillRGBA(178, 218, func(x, y int) color.NRGBA {
		switch {
		case y < 20 || y >= 198:
			return color.NRGBA{255, 255, 255, 255} // outside the crop: must not show
		case y < 109:
			return color.NRGBA{10, 20, 30, 255}
		}
		return color.NRGBA{200, 150, 100, 255}
	})
	writeFile(t, filepath.Join(dir, "a.png"), encodePNG(t, img))
	m, _, err := LoadFolder(dir, Options{Size: 16})
	if err != nil {
		t.Fatal(err)
	}
	// scale 178/16 = 11.125: row o reaches input rows within (o+0.5)·11.125 ± 11.125, all < 89 for o ≤ 6 and all
	// ≥ 89 for o ≥ 9.
	for c, pair := range [][2]uint8{{10, 200}, {20, 150}, {30, 100}} {
		for y := 0; y < 16; y++ {
			for x := 0; x < 16; x++ {
				v := m.At(0)[(c*16+y)*16+x]
				if (y <= 6 && v != pair[0]) || (y >= 9 && v != pair[1]) {
					t.Fatalf("channel %d (%d,%d) = %d, want top %d / bottom %d", c, y, x, v, pair[0], pair[1])
				}
			}
		}
	}
}

func TestFolderMissingOrEmpty(t *testing.T) {
	p := filepath.Join(t.TempDir(), "img_align_celeba")
	_, _, err := LoadFolder(p, Options{Size: 32})
	if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "bin/pack") || !strings.Contains(err.Error(), "img_align_celeba") {
		t.Fatalf("missing folder: err = %v", err)
	}
	parent := t.TempDir()
	os.Mkdir(filepath.Join(parent, "img_align_celeba"), 0o755)
	_, _, err = LoadFolder(parent, Options{Size: 32})
	if err == nil || !strings.Contains(err.Error(), "did you mean") {
		t.Fatalf("folder without images: err = %v", err)
	}
	if _, _, err := LoadFolder(parent, Options{}); err == nil || !strings.Contains(err.Error(), "Size") {
		t.Fatalf("size 0 accepted: %v", err)
	}
}
