package data

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/draw"
	_ "image/jpeg" // register the JPEG decoder for image.Decode
	_ "image/png"  // register the PNG decoder for image.Decode
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
)

// Limits that keep one hostile file from exhausting memory: checked before decoding the pixels.
const (
	maxImageFileBytes = 64 << 20
	maxImagePixels    = 1 << 26
)

// BadFile is a folder file that could not be turned into an image, and why.
type BadFile struct {
	Path string
	Err  error
}

func (b BadFile) Error() string { return fmt.Sprintf("%s: %v", b.Path, b.Err) }
func (b BadFile) Unwrap() error { return b.Err }

// ImageFiles lists the .jpg, .jpeg and .png files (any case) directly in dir, sorted by file name, which makes the
// dataset order (and so MaxItems and every shuffled batch) independent of the file system. Directories are left out;
// symlinks are kept and fail later, as a bad file, if they lead nowhere.
func ImageFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir) // sorted by file name
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("data: image folder %s does not exist; put the images there (for CelebA: unzip "+
				"img_align_celeba.zip so that %s holds 000001.jpg …) and pack them once with "+
				"`bin/pack -in %s -out datasets/celeba32.pack -size 32 -crop 140` (build it with `go build -o bin/pack ./cmd/pack`)",
				dir, dir, dir)
		}
		return nil, fmt.Errorf("data: image folder %s: %w", dir, err)
	}
	var files []string
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		switch strings.ToLower(filepath.Ext(e.Name())) {
		case ".jpg", ".jpeg", ".png":
			files = append(files, filepath.Join(dir, e.Name()))
		}
	}
	return files, nil
}

// LoadFolder loads the JPEG/PNG files of dir (see ImageFiles for which and in what order) as Size×Size images:
// each is center-cropped to a Crop×Crop square (0: the largest centered square; the offset is (W−Crop)/2,
// (H−Crop)/2, rounded down), then resized with the antialiased filter documented in resize.go.
//
// Conversions: gray and CMYK JPEGs, paletted and 16-bit PNGs all go through image/draw into 8-bit RGBA (16-bit
// values are truncated to their high byte). Alpha is composited on black: the premultiplied RGB is kept, so a fully
// transparent pixel is black and a half-transparent white one is mid-gray. With Channels 1 the RGB is reduced to
// BT.601 luma 0.299R+0.587G+0.114B before resizing.
//
// Policy for odd files, each case tested (TestFolderOddFiles): gray and CMYK JPEGs, paletted PNGs, PNGs with alpha
// and 16-bit PNGs are converted as above. A file that is bad is: empty (0 bytes), not a regular file, not a
// decodable JPEG or PNG (a text file named .jpg), larger than 64 MiB, an image over 2^26 pixels (67 megapixels,
// e.g. 8192×8192: refused from its header by image.DecodeConfig before any pixel is decoded, so a hostile header
// cannot make the loader allocate gigabytes), smaller than Crop, or a symlink that leads nowhere or loops. Without
// SkipBad LoadFolder stops with an error naming the first bad file in name order and why; with SkipBad it leaves
// the file out and lists it in the returned slice (the trainer logs the count). Nothing panics: a decoder panic
// is caught and the file is bad. MaxItems keeps the first MaxItems good images. Files are decoded by Workers goroutines (default 2), each
// into its own slot, so the result does not depend on scheduling.
func LoadFolder(dir string, opts Options) (*Images, []BadFile, error) {
	if opts.Size <= 0 {
		return nil, nil, fmt.Errorf("data: image folder %s: output size %d; set Size (e.g. 32)", dir, opts.Size)
	}
	if opts.Crop < 0 || opts.MaxItems < 0 {
		return nil, nil, fmt.Errorf("data: image folder %s: negative crop %d or max items %d", dir, opts.Crop, opts.MaxItems)
	}
	c := opts.Channels
	if c == 0 {
		c = 3
	}
	if c != 1 && c != 3 {
		return nil, nil, fmt.Errorf("data: image folder %s: channels %d; want 1 or 3", dir, opts.Channels)
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = 2
	}
	files, err := ImageFiles(dir)
	if err != nil {
		return nil, nil, err
	}
	if len(files) == 0 {
		hint := ""
		if st, err := os.Stat(filepath.Join(dir, "img_align_celeba")); err == nil && st.IsDir() {
			hint = fmt.Sprintf(" (did you mean %s?)", filepath.Join(dir, "img_align_celeba"))
		}
		return nil, nil, fmt.Errorf("data: image folder %s has no .jpg, .jpeg or .png files%s", dir, hint)
	}
	target := len(files)
	if opts.MaxItems > 0 && opts.MaxItems < target {
		target = opts.MaxItems
	}
	size := c * opts.Size * opts.Size
	m := &Images{C: c, H: opts.Size, W: opts.Size, Pix: make([]uint8, target*size)}
	var bad []BadFile
	have, next := 0, 0 // good images kept; next file to look at
	for have < target && next < len(files) {
		// Decode a window of as many files as images are still wanted, into slots have, have+1, …; then close the
		// gaps left by bad files. Only with SkipBad can there be gaps, and then another window follows.
		window := files[next:min(next+target-have, len(files))]
		errs := decodeWindow(window, m.Pix[have*size:(have+len(window))*size], opts, c, workers)
		for k, err := range errs {
			if err != nil && !opts.SkipBad {
				return nil, bad, fmt.Errorf("data: image folder %s: bad file %w (set SkipBad / -skip-bad to skip such files)", dir, BadFile{window[k], err})
			}
		}
		w := have
		for k, err := range errs {
			if err != nil {
				bad = append(bad, BadFile{window[k], err})
				continue
			}
			if r := have + k; r != w {
				copy(m.Pix[w*size:(w+1)*size], m.Pix[r*size:(r+1)*size])
			}
			w++
		}
		have, next = w, next+len(window)
	}
	if have == 0 {
		return nil, bad, fmt.Errorf("data: image folder %s: all %d image files are bad; first: %w", dir, len(bad), bad[0])
	}
	m.Pix = m.Pix[:have*size]
	return m, bad, nil
}

// decodeWindow decodes files[k] into dst[k·size:(k+1)·size] with workers goroutines. Indices are handed out in
// increasing order; after the first error (when bad files are not skipped) no new index is handed out, so every file
// before the first bad one has been decoded and the reported error is always that of the first bad file.
func decodeWindow(files []string, dst []uint8, opts Options, c, workers int) []error {
	errs := make([]error, len(files))
	size := c * opts.Size * opts.Size
	var next atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range min(workers, len(files)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var sc scratch
			for !stop.Load() {
				k := int(next.Add(1) - 1)
				if k >= len(files) {
					return
				}
				errs[k] = decodeFile(files[k], dst[k*size:(k+1)*size], opts.Crop, opts.Size, c, &sc)
				if errs[k] != nil && !opts.SkipBad {
					stop.Store(true)
				}
			}
		}()
	}
	wg.Wait()
	return errs
}

// scratch is one worker's reusable buffers.
type scratch struct {
	rgba  *image.RGBA
	plane []float32
	tmp   []float32
	out   []float32
}

// decodeFile reads, decodes, crops and resizes one file into dst (c planes of size×size). It never panics on bad
// input: every failure is an error.
func decodeFile(path string, dst []uint8, crop, size, c int, sc *scratch) (err error) {
	defer func() {
		// The standard decoders do not panic on hostile input as far as anyone knows; this keeps a decoder bug in
		// one file from killing a long packing run.
		if r := recover(); r != nil {
			err = fmt.Errorf("decoder panic: %v", r)
		}
	}()
	st, err := os.Stat(path) // follows symlinks: a loop fails here with "too many levels of symbolic links"
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("not a regular file (%v)", st.Mode().Type())
	}
	if st.Size() == 0 {
		return errors.New("empty file (0 bytes)")
	}
	if st.Size() > maxImageFileBytes {
		return fmt.Errorf("file is %d bytes, more than the %d-byte limit for one image", st.Size(), maxImageFileBytes)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	cfg, format, err := image.DecodeConfig(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("not a decodable JPEG or PNG: %w", err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || int64(cfg.Width)*int64(cfg.Height) > maxImagePixels {
		return fmt.Errorf("%s image of %dx%d pixels is empty or larger than the %d-pixel limit", format, cfg.Width, cfg.Height, maxImagePixels)
	}
	side := crop
	if side == 0 {
		side = min(cfg.Width, cfg.Height)
	}
	if cfg.Width < side || cfg.Height < side {
		return fmt.Errorf("%s image of %dx%d pixels is smaller than the %dx%d crop", format, cfg.Width, cfg.Height, side, side)
	}
	img, _, err := image.Decode(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("decoding %s: %w", format, err)
	}
	cropResize(dst, img, side, size, c, sc)
	return nil
}

// cropResize cuts the centered side×side square out of img, converts it to c planes (RGB or luma) and resizes each
// to size×size into dst.
func cropResize(dst []uint8, img image.Image, side, size, c int, sc *scratch) {
	b := img.Bounds()
	x0 := b.Min.X + (b.Dx()-side)/2
	y0 := b.Min.Y + (b.Dy()-side)/2
	if sc.rgba == nil || sc.rgba.Rect.Dx() != side {
		sc.rgba = image.NewRGBA(image.Rect(0, 0, side, side))
	}
	// draw.Src into RGBA converts any colour model to 8-bit premultiplied RGBA, i.e. composited on black.
	draw.Draw(sc.rgba, sc.rgba.Rect, img, image.Pt(x0, y0), draw.Src)
	n := side * side
	sc.plane = grow(sc.plane, n)
	sc.tmp = grow(sc.tmp, side*size)
	sc.out = grow(sc.out, size*size)
	rw := newResampleWeights(side, size)
	pix := sc.rgba.Pix
	for ch := 0; ch < c; ch++ {
		if c == 1 {
			for i := 0; i < n; i++ {
				p := pix[4*i : 4*i+3 : 4*i+3]
				sc.plane[i] = 0.299*float32(p[0]) + 0.587*float32(p[1]) + 0.114*float32(p[2])
			}
		} else {
			for i := 0; i < n; i++ {
				sc.plane[i] = float32(pix[4*i+ch])
			}
		}
		resizePlane(sc.out, size, size, sc.plane, side, side, rw, rw, sc.tmp)
		d := dst[ch*size*size : (ch+1)*size*size]
		for i, v := range sc.out[:size*size] {
			d[i] = toUint8(v)
		}
	}
}

func grow(b []float32, n int) []float32 {
	if cap(b) < n {
		return make([]float32, n)
	}
	return b[:n]
}
