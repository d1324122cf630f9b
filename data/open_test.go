package data

import (
	"bytes"
	"fmt"
	"image/color"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
)

// jpegFolder writes n 178×218 JPEGs with smooth random content (so that the resize has something to do).
func jpegFolder(t testing.TB, n int) string {
	t.Helper()
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(7, 8))
	for i := 0; i < n; i++ {
		a, b, c := r.Float64()*2, r.Float64()*2, uint8(r.IntN(256))
		img := fillRGBA(178, 218, func(x, y int) color.NRGBA {
			return color.NRGBA{uint8(float64(x) * a), uint8(float64(y) * b), c ^ uint8(x*y), 255}
		})
		writeFile(t, filepath.Join(dir, fmt.Sprintf("%06d.jpg", i+1)), encodeJPEG(t, img))
	}
	return dir
}

func sameImages(t *testing.T, what string, got, want *Images) {
	t.Helper()
	if got.Len() != want.Len() || got.C != want.C || got.H != want.H || got.W != want.W {
		t.Fatalf("%s: %dx%dx%dx%d, want %dx%dx%dx%d", what, got.Len(), got.C, got.H, got.W, want.Len(), want.C, want.H, want.W)
	}
	if !bytes.Equal(got.Pix, want.Pix) {
		t.Fatalf("%s: pixels differ", what)
	}
}

func TestPackFolderReloadsIdentically(t *testing.T) {
	dir := jpegFolder(t, 9)
	opts := Options{Size: 32, Crop: 140, MaxItems: 7}
	direct, _, err := LoadFolder(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "celeba32.pack")
	sum, err := Pack(dir, out, opts)
	if err != nil {
		t.Fatal(err)
	}
	if sum.N != 7 || sum.C != 3 || sum.H != 32 || sum.W != 32 || sum.Kind != KindFolder || sum.Bytes != 36+7*3*32*32 {
		t.Fatalf("summary %+v", sum)
	}
	if !strings.Contains(sum.String(), "7 images 3x32x32") {
		t.Errorf("summary line %q", sum)
	}
	back, err := ReadPack(out)
	if err != nil {
		t.Fatal(err)
	}
	sameImages(t, "pack of folder", back, direct)
	// Open picks the reader by what the path is.
	viaOpen, rep, err := Open(out, Options{MaxItems: 3})
	if err != nil || rep.Kind != KindPack {
		t.Fatalf("Open(pack): kind %q, err %v", rep.Kind, err)
	}
	sameImages(t, "Open(pack) max 3", viaOpen, &Images{C: 3, H: 32, W: 32, Pix: direct.Pix[:3*3*32*32]})
	viaOpen, rep, err = Open(dir, opts)
	if err != nil || rep.Kind != KindFolder {
		t.Fatalf("Open(folder): kind %q, err %v", rep.Kind, err)
	}
	sameImages(t, "Open(folder)", viaOpen, direct)
	if _, err := Pack(out, out+"2", opts); err == nil || !strings.Contains(err.Error(), "already a pack") {
		t.Fatalf("packing a pack: %v", err)
	}
}

func TestPackSyntheticIDX(t *testing.T) {
	const n, h, w = 6, 28, 28
	pix := synthIDX(n, h, w)
	dir := t.TempDir()
	gz := writeFile(t, filepath.Join(dir, "train-images-idx3-ubyte.gz"), gzipBytes(t, encodeIDX([]int{n, h, w}, pix)))
	opts := Options{Pad: 32}
	direct, err := LoadFashionMNIST(gz, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range []string{gz, dir} { // the file, or the directory holding it
		out := filepath.Join(t.TempDir(), "f.pack")
		if _, err := Pack(in, out, opts); err != nil {
			t.Fatal(err)
		}
		back, err := ReadPack(out)
		if err != nil {
			t.Fatal(err)
		}
		sameImages(t, "pack of "+in, back, direct)
		m, rep, err := Open(in, opts)
		if err != nil || rep.Kind != KindIDX || rep.Source != gz {
			t.Fatalf("Open(%s): %+v, %v", in, rep, err)
		}
		sameImages(t, "Open "+in, m, direct)
	}
}

// TestPackRealFashionMNIST packs the installed training set padded to 32×32 and reloads it byte for byte.
func TestPackRealFashionMNIST(t *testing.T) {
	requireFashionMNIST(t)
	opts := Options{Pad: 32}
	direct, err := LoadFashionMNIST(FashionMNISTDir, opts)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "fmnist32.pack")
	sum, err := Pack(FashionMNISTDir, out, opts)
	if err != nil {
		t.Fatal(err)
	}
	if sum.N != 60000 || sum.H != 32 {
		t.Fatalf("summary %+v", sum)
	}
	back, err := ReadPack(out)
	if err != nil {
		t.Fatal(err)
	}
	sameImages(t, "Fashion-MNIST pack", back, direct)
}

func TestOpenRefuses(t *testing.T) {
	dir := t.TempDir()
	txt := writeFile(t, filepath.Join(dir, "notes.txt"), []byte("hello"))
	if _, _, err := Open(txt, Options{}); err == nil || !strings.Contains(err.Error(), txt) || !strings.Contains(err.Error(), "not a pack") {
		t.Fatalf("text file: %v", err)
	}
	for path, hint := range map[string]string{
		filepath.Join(dir, "fashion-mnist"):    "apt-get install dataset-fashion-mnist",
		filepath.Join(dir, "celeba32.pack"):    "bin/pack",
		filepath.Join(dir, "img_align_celeba"): "bin/pack",
	} {
		if _, _, err := Open(path, Options{Size: 32}); err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), hint) {
			t.Errorf("missing %s: err = %v, want the path and %q", path, err, hint)
		}
	}
}
