// Package data reads the image datasets the trainer learns from and serves them as batches.
//
// Every source ends up as the same thing: N images of C×H×W uint8 values in CHW order (channel planes, each plane
// rows top to bottom, each row left to right), held in memory by *Images. The datasets this project trains on are
// small (CelebA 10k×3×32×32 is 30 MB, Fashion-MNIST 60k×1×32×32 is 61 MB), so there is no streaming from disk: the
// trainer uploads Images.Pix to the device once and gathers batches there.
//
// Sources:
//   - Fashion-MNIST IDX files (LoadFashionMNIST, ReadIDX), raw or gzip;
//   - a folder of JPEG/PNG files such as CelebA's img_align_celeba (LoadFolder): center crop, anti-aliased resize;
//   - a packed file (WritePack, ReadPack): a checksummed header and the raw uint8 pixels, made once by cmd/pack so
//     that training decodes no image files.
//
// Open picks among them by what the path is. Loader turns a Dataset into shuffled, optionally flipped float32
// batches in [−1, 1], deterministically for a seed, with a resumable position.
package data

import "fmt"

// Dataset is N images of C×H×W uint8 values in CHW order.
type Dataset interface {
	// Len is the number of images N.
	Len() int
	// Shape is the shape of one image.
	Shape() (c, h, w int)
	// Image copies image i (0 ≤ i < Len) into dst, which has at least C·H·W elements.
	Image(i int, dst []uint8)
}

// Images is an in-memory Dataset: Pix holds N·C·H·W bytes, image i at Pix[i·C·H·W : (i+1)·C·H·W], CHW order.
type Images struct {
	C, H, W int
	Pix     []uint8
}

// ImageSize is C·H·W, the number of bytes of one image.
func (m *Images) ImageSize() int { return m.C * m.H * m.W }

// Len is the number of images, len(Pix)/(C·H·W).
func (m *Images) Len() int {
	if n := m.ImageSize(); n > 0 {
		return len(m.Pix) / n
	}
	return 0
}

// Shape is (C, H, W).
func (m *Images) Shape() (c, h, w int) { return m.C, m.H, m.W }

// Image copies image i into dst.
func (m *Images) Image(i int, dst []uint8) { copy(dst[:m.ImageSize()], m.At(i)) }

// At is image i as a subslice of Pix (no copy).
func (m *Images) At(i int) []uint8 {
	n := m.ImageSize()
	return m.Pix[i*n : (i+1)*n : (i+1)*n]
}

// Truncate keeps the first n images (n ≤ 0 or n ≥ Len keeps all).
func (m *Images) Truncate(n int) {
	if n > 0 && n < m.Len() {
		m.Pix = m.Pix[:n*m.ImageSize()]
	}
}

// Validate checks that the shape is positive and Pix holds a whole number of images.
func (m *Images) Validate() error {
	if m.C <= 0 || m.H <= 0 || m.W <= 0 {
		return fmt.Errorf("data: images shape %dx%dx%d is not positive", m.C, m.H, m.W)
	}
	if len(m.Pix)%m.ImageSize() != 0 {
		return fmt.Errorf("data: images %dx%dx%d: %d bytes is not a whole number of images", m.C, m.H, m.W, len(m.Pix))
	}
	return nil
}

// ToFloat maps uint8 pixels to float32 in [−1, 1]: dst[i] = float32(src[i])/127.5 − 1, computed in float32 exactly as
// written (a division, not a multiplication by 1/127.5, so 0 → −1 and 255 → +1 exactly, and a device kernel that
// writes the same expression gets the same bits). It panics if dst is shorter than src.
func ToFloat(dst []float32, src []uint8) {
	dst = dst[:len(src)]
	for i, v := range src {
		dst[i] = float32(v)/127.5 - 1
	}
}

// Options say how to load a dataset. The zero value loads everything at its native size (image folders need Size).
type Options struct {
	// Size is the side of the square output of an image folder: each image is center-cropped to a square and
	// resized to Size×Size. Required for folders. IDX images larger than Size×Size (after Pad) are shrunk to it with
	// the same filter; smaller ones are left alone (0: native size). Ignored for pack files.
	Size int
	// Crop is the side of the centered square cut from each folder image before resizing (140 is the usual CelebA
	// recipe for 178×218 img_align_celeba); 0 takes the largest centered square. An image smaller than Crop is bad.
	Crop int
	// Channels is 3 (RGB) or 1 (gray, ITU-R BT.601 luma 0.299R+0.587G+0.114B); 0 means the source's natural count
	// (3 for folders, 1 for IDX). IDX images with Channels 3 repeat the gray plane three times.
	Channels int
	// Pad is the side that IDX images (28×28) are zero-padded to, centered (value 0 = black, which is Fashion-MNIST's
	// background); 0 keeps 28×28. Ignored for folders and pack files.
	Pad int
	// MaxItems keeps the first MaxItems images (after sorting by file name for folders; the first good ones when
	// SkipBad skips some); 0 keeps all.
	MaxItems int
	// SkipBad makes LoadFolder skip files that fail to decode (and count them) instead of stopping at the first.
	SkipBad bool
	// Workers is the number of decoding goroutines for folders; 0 means 2.
	Workers int
}
