package data

import (
	"os"
	"path/filepath"
	"testing"
)

// requireFashionMNIST fails (does not skip) when the real data is absent: CI installs it, and a silent skip would
// hide that the reader was never run on the real files.
func requireFashionMNIST(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(FashionMNISTDir, "train-images-idx3-ubyte.gz")); err != nil {
		t.Fatalf("Fashion-MNIST is not installed (%v): run `apt-get install dataset-fashion-mnist`, which puts "+
			"train-images-idx3-ubyte.gz and friends in %s", err, FashionMNISTDir)
	}
}

// TestFashionMNISTReal loads the real training set. Expected values come from the dataset's documentation, not
// from this code: 60000 training and 10000 test images of 28×28; the first training label is 9 (ankle boot); the
// mean pixel value is 0.2860 of full scale (the normalisation constant everyone uses for Fashion-MNIST).
func TestFashionMNISTReal(t *testing.T) {
	requireFashionMNIST(t)
	m, err := LoadFashionMNIST(FashionMNISTDir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if m.Len() != 60000 || m.C != 1 || m.H != 28 || m.W != 28 {
		t.Fatalf("train images %dx%dx%dx%d, want 60000x1x28x28", m.Len(), m.C, m.H, m.W)
	}
	var sum float64
	for _, v := range m.Pix {
		sum += float64(v)
	}
	if mean := sum / float64(len(m.Pix)) / 255; mean < 0.285 || mean > 0.287 {
		t.Errorf("mean pixel %.4f of full scale, want 0.2860", mean)
	}

	dims, labels, err := ReadIDXFile(filepath.Join(FashionMNISTDir, "train-labels-idx1-ubyte.gz"))
	if err != nil {
		t.Fatal(err)
	}
	if len(dims) != 1 || dims[0] != 60000 || labels[0] != 9 {
		t.Errorf("labels dims %v, first label %d; want [60000] and 9 (ankle boot)", dims, labels[0])
	}

	test, err := LoadFashionMNIST(filepath.Join(FashionMNISTDir, "t10k-images-idx3-ubyte.gz"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	if test.Len() != 10000 {
		t.Errorf("test images: %d, want 10000", test.Len())
	}

	// Padded to 32×32: a 2-pixel black border around the unpadded image.
	p, err := LoadFashionMNIST(FashionMNISTDir, Options{Pad: 32, MaxItems: 100})
	if err != nil {
		t.Fatal(err)
	}
	if p.Len() != 100 || p.H != 32 || p.W != 32 {
		t.Fatalf("padded: %dx%dx%dx%d, want 100x1x32x32", p.Len(), p.C, p.H, p.W)
	}
	for i := 0; i < p.Len(); i++ {
		for y := 0; y < 32; y++ {
			for x := 0; x < 32; x++ {
				want := uint8(0)
				if y >= 2 && y < 30 && x >= 2 && x < 30 {
					want = m.At(i)[(y-2)*28+x-2]
				}
				if got := p.At(i)[y*32+x]; got != want {
					t.Fatalf("padded image %d (%d,%d) = %d, want %d", i, y, x, got, want)
				}
			}
		}
	}
}
