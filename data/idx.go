package data

import (
	"bufio"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// IDX file format (LeCun's MNIST format, also used by Fashion-MNIST): a big-endian header
//
//	magic  [4]byte  0x00 0x00 type ndims   (type 0x08 = unsigned byte)
//	dims   [ndims]uint32 big-endian
//
// then prod(dims) elements, row-major. Images are magic 0x00000803 (N, H, W); labels 0x00000801 (N).
// Files are often gzip-compressed; ReadIDX detects that by the gzip magic 0x1f 0x8b, not by the file name.
const (
	IDXMagicImages = 0x00000803
	IDXMagicLabels = 0x00000801

	idxTypeUint8 = 0x08
	idxMaxDims   = 4
	// idxMaxElems bounds what a header may claim, so a corrupt header cannot ask for an absurd allocation; memory
	// is in any case only allocated as data actually arrives (see ReadIDX).
	idxMaxElems = 1 << 32
)

// FashionMNISTDir is where Debian's dataset-fashion-mnist package installs the files.
const FashionMNISTDir = "/usr/share/datasets/fashion-mnist"

// ReadIDX reads one unsigned-byte IDX file (raw or gzip) from r and returns its dimensions and elements. name is
// used in errors only. It refuses a bad magic, a type other than unsigned byte, zero or more than 4 dimensions,
// a body shorter than the header promises (truncated) and trailing bytes after it.
func ReadIDX(r io.Reader, name string) (dims []int, elems []uint8, err error) {
	br := bufio.NewReader(r)
	if head, _ := br.Peek(2); len(head) == 2 && head[0] == 0x1f && head[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("data: IDX %s: gzip: %w", name, err)
		}
		defer zr.Close()
		br = bufio.NewReader(zr)
	}
	var magic [4]byte
	if _, err := io.ReadFull(br, magic[:]); err != nil {
		return nil, nil, fmt.Errorf("data: IDX %s: truncated: reading the 4-byte magic: %w", name, noEOF(err))
	}
	if magic[0] != 0 || magic[1] != 0 {
		return nil, nil, fmt.Errorf("data: IDX %s: wrong magic % x: an IDX file starts with 00 00 (e.g. 00 00 08 03 for images)", name, magic)
	}
	if magic[2] != idxTypeUint8 {
		return nil, nil, fmt.Errorf("data: IDX %s: element type 0x%02x is not supported (only 0x08, unsigned byte)", name, magic[2])
	}
	nd := int(magic[3])
	if nd < 1 || nd > idxMaxDims {
		return nil, nil, fmt.Errorf("data: IDX %s: %d dimensions (magic % x); want 1 to %d", name, nd, magic, idxMaxDims)
	}
	dims = make([]int, nd)
	total := uint64(1)
	for i := range dims {
		var b [4]byte
		if _, err := io.ReadFull(br, b[:]); err != nil {
			return nil, nil, fmt.Errorf("data: IDX %s: truncated: reading dimension %d of %d: %w", name, i, nd, noEOF(err))
		}
		dims[i] = int(binary.BigEndian.Uint32(b[:]))
		total *= uint64(dims[i])
		if total > idxMaxElems {
			return nil, nil, fmt.Errorf("data: IDX %s: dimensions %v claim more than %d elements", name, dims[:i+1], uint64(idxMaxElems))
		}
	}
	// Read at most total+1 bytes: io.ReadAll grows its buffer only as data arrives, so a lying header on a short
	// file costs no more memory than the file, and the +1 detects trailing bytes.
	elems, err = io.ReadAll(io.LimitReader(br, int64(total)+1))
	if err != nil {
		return nil, nil, fmt.Errorf("data: IDX %s %v: reading elements: %w", name, dims, err)
	}
	if uint64(len(elems)) < total {
		return nil, nil, fmt.Errorf("data: IDX %s: truncated: dimensions %v need %d element bytes, file has %d", name, dims, total, len(elems))
	}
	if uint64(len(elems)) > total {
		return nil, nil, fmt.Errorf("data: IDX %s: trailing bytes after the %d element bytes of dimensions %v", name, total, dims)
	}
	return dims, elems, nil
}

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// ReadIDXFile reads an IDX file (raw or gzip) by path.
func ReadIDXFile(path string) (dims []int, elems []uint8, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("data: IDX %s: %w", path, err)
	}
	defer f.Close()
	return ReadIDX(f, path)
}

// idxImagesFromBytes turns IDX (N, H, W) elements into Images with 1 channel.
func idxImages(path string, dims []int, elems []uint8) (*Images, error) {
	if len(dims) != 3 {
		return nil, fmt.Errorf("data: IDX %s: dimensions %v are not images (want 3: N, H, W; magic 0x%08x)", path, dims, IDXMagicImages)
	}
	return &Images{C: 1, H: dims[1], W: dims[2], Pix: elems}, nil
}

// fashionImageFile resolves a Fashion-MNIST path: a file is used as is; a directory must hold
// train-images-idx3-ubyte (or .gz).
func fashionImageFile(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("data: Fashion-MNIST: %s does not exist; install the data with `apt-get install dataset-fashion-mnist` "+
				"(it puts train-images-idx3-ubyte.gz in %s) or download the IDX files from github.com/zalandoresearch/fashion-mnist", path, FashionMNISTDir)
		}
		return "", fmt.Errorf("data: Fashion-MNIST: %w", err)
	}
	if !st.IsDir() {
		return path, nil
	}
	if f := findIDXImages(path); f != "" {
		return f, nil
	}
	return "", fmt.Errorf("data: Fashion-MNIST: directory %s has no train-images-idx3-ubyte or train-images-idx3-ubyte.gz; "+
		"install the data with `apt-get install dataset-fashion-mnist` (files land in %s)", path, FashionMNISTDir)
}

// findIDXImages returns the training-images IDX file in dir, or "".
func findIDXImages(dir string) string {
	for _, name := range []string{"train-images-idx3-ubyte.gz", "train-images-idx3-ubyte", "train-images.idx3-ubyte"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// LoadFashionMNIST loads Fashion-MNIST training images. path is an IDX images file (raw or gzip) or a directory
// holding train-images-idx3-ubyte(.gz), such as FashionMNISTDir. Options used, in this order: MaxItems; Pad
// (zero-pad 28×28 to Pad×Pad, centered; with an odd difference the extra row/column goes bottom/right); Size (when
// the images are still larger than Size×Size, each is shrunk to Size×Size with the same anti-aliased filter as
// image folders, see resize.go: configs/tiny.toml trains at 16×16; IDX images are never enlarged by Size, Pad is
// the way to grow them); Channels (0 or 1: gray; 3: gray repeated). The test split is loaded by naming its file
// (t10k-images-idx3-ubyte.gz).
func LoadFashionMNIST(path string, opts Options) (*Images, error) {
	file, err := fashionImageFile(path)
	if err != nil {
		return nil, err
	}
	dims, elems, err := ReadIDXFile(file)
	if err != nil {
		return nil, err
	}
	m, err := idxImages(file, dims, elems)
	if err != nil {
		return nil, err
	}
	return shapeIDX(m, file, opts)
}

// shapeIDX applies MaxItems, Pad, Size and Channels to 1-channel IDX images.
func shapeIDX(m *Images, name string, opts Options) (*Images, error) {
	if opts.MaxItems < 0 {
		return nil, fmt.Errorf("data: IDX %s: MaxItems %d is negative", name, opts.MaxItems)
	}
	m.Truncate(opts.MaxItems)
	if opts.Pad != 0 {
		if opts.Pad < m.H || opts.Pad < m.W {
			return nil, fmt.Errorf("data: IDX %s: pad to %d is smaller than the %dx%d images", name, opts.Pad, m.H, m.W)
		}
		m = padImages(m, opts.Pad, opts.Pad)
	}
	if opts.Size < 0 {
		return nil, fmt.Errorf("data: IDX %s: size %d is negative", name, opts.Size)
	}
	if opts.Size > 0 && (m.H > opts.Size || m.W > opts.Size) {
		m = shrinkImages(m, opts.Size)
	}
	switch opts.Channels {
	case 0, 1:
	case 3:
		m = repeatChannels(m, 3)
	default:
		return nil, fmt.Errorf("data: IDX %s: channels %d; want 1 or 3", name, opts.Channels)
	}
	return m, nil
}

// padImages centers each image in an h×w canvas of zeros: top = (h−H)/2, left = (w−W)/2.
func padImages(m *Images, h, w int) *Images {
	if h == m.H && w == m.W {
		return m
	}
	out := &Images{C: m.C, H: h, W: w, Pix: make([]uint8, m.Len()*m.C*h*w)}
	top, left := (h-m.H)/2, (w-m.W)/2
	for i := 0; i < m.Len(); i++ {
		src, dst := m.At(i), out.At(i)
		for c := 0; c < m.C; c++ {
			for y := 0; y < m.H; y++ {
				copy(dst[(c*h+top+y)*w+left:][:m.W], src[(c*m.H+y)*m.W:][:m.W])
			}
		}
	}
	return out
}

// shrinkImages resizes every plane of m to size×size with the anti-aliased filter of resize.go (rounded to the
// nearest byte, as folder images are).
func shrinkImages(m *Images, size int) *Images {
	out := &Images{C: m.C, H: size, W: size, Pix: make([]uint8, m.Len()*m.C*size*size)}
	rx, ry := newResampleWeights(m.W, size), newResampleWeights(m.H, size)
	plane := make([]float32, m.H*m.W)
	tmp := make([]float32, m.H*size)
	res := make([]float32, size*size)
	for i := 0; i < m.Len(); i++ {
		src, dst := m.At(i), out.At(i)
		for c := 0; c < m.C; c++ {
			for k, v := range src[c*m.H*m.W : (c+1)*m.H*m.W] {
				plane[k] = float32(v)
			}
			resizePlane(res, size, size, plane, m.H, m.W, rx, ry, tmp)
			for k, v := range res {
				dst[c*size*size+k] = toUint8(v)
			}
		}
	}
	return out
}

// repeatChannels turns 1-channel images into c-channel ones by repeating the plane.
func repeatChannels(m *Images, c int) *Images {
	plane := m.H * m.W
	out := &Images{C: c, H: m.H, W: m.W, Pix: make([]uint8, m.Len()*c*plane)}
	for i := 0; i < m.Len(); i++ {
		src, dst := m.At(i), out.At(i)
		for k := 0; k < c; k++ {
			copy(dst[k*plane:(k+1)*plane], src)
		}
	}
	return out
}
