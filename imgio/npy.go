package imgio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// npyMagic starts every .npy file (NumPy's format.py, versions 1.0 to 3.0).
const npyMagic = "\x93NUMPY"

// WriteNPY writes x as a little-endian float32 C-order array of the given shape in NumPy's .npy format 1.0:
// magic, version, a uint16 header length, a Python-dict header padded with spaces to a 64-byte boundary and ending
// in '\n', then the raw data. np.load reads it back unchanged.
func WriteNPY(w io.Writer, x []float32, shape []int) error {
	n := 1
	dims := make([]string, len(shape))
	for i, s := range shape {
		n *= s
		dims[i] = strconv.Itoa(s)
	}
	if n != len(x) {
		return fmt.Errorf("imgio: npy: shape %v wants %d values, have %d", shape, n, len(x))
	}
	tuple := strings.Join(dims, ", ")
	if len(shape) == 1 {
		tuple += ","
	}
	hdr := fmt.Sprintf("{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }", tuple)
	total := len(npyMagic) + 2 + 2 + len(hdr) + 1
	hdr += strings.Repeat(" ", (64-total%64)%64) + "\n"
	var b bytes.Buffer
	b.WriteString(npyMagic)
	b.Write([]byte{1, 0})
	binary.Write(&b, binary.LittleEndian, uint16(len(hdr)))
	b.WriteString(hdr)
	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("imgio: npy: %w", err)
	}
	buf := make([]byte, 4*len(x))
	for i, v := range x {
		binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(v))
	}
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("imgio: npy: %w", err)
	}
	return nil
}

var (
	reDescr   = regexp.MustCompile(`'descr'\s*:\s*'([^']*)'`)
	reFortran = regexp.MustCompile(`'fortran_order'\s*:\s*(True|False)`)
	reShape   = regexp.MustCompile(`'shape'\s*:\s*\(([^)]*)\)`)
)

// ReadNPY reads a float32 (or float64, converted) C-order .npy array and returns its values and shape.
func ReadNPY(path string) ([]float32, []int, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("imgio: %w", err)
	}
	x, shape, err := DecodeNPY(src)
	if err != nil {
		return nil, nil, fmt.Errorf("imgio: npy %s: %w", path, err)
	}
	return x, shape, nil
}

// DecodeNPY is ReadNPY over bytes.
func DecodeNPY(src []byte) ([]float32, []int, error) {
	if len(src) < 10 || string(src[:6]) != npyMagic {
		return nil, nil, errors.New("not a .npy file (no \\x93NUMPY magic)")
	}
	var hlen, start int
	switch src[6] {
	case 1:
		hlen, start = int(binary.LittleEndian.Uint16(src[8:10])), 10
	case 2, 3:
		if len(src) < 12 {
			return nil, nil, errors.New("truncated header")
		}
		hlen, start = int(binary.LittleEndian.Uint32(src[8:12])), 12
	default:
		return nil, nil, fmt.Errorf("unsupported .npy version %d.%d", src[6], src[7])
	}
	if start+hlen > len(src) {
		return nil, nil, errors.New("truncated header")
	}
	hdr := string(src[start : start+hlen])
	data := src[start+hlen:]
	d := reDescr.FindStringSubmatch(hdr)
	f := reFortran.FindStringSubmatch(hdr)
	s := reShape.FindStringSubmatch(hdr)
	if d == nil || f == nil || s == nil {
		return nil, nil, fmt.Errorf("header %q lacks descr, fortran_order or shape", hdr)
	}
	if f[1] == "True" {
		return nil, nil, errors.New("fortran_order arrays are not supported; save with np.ascontiguousarray")
	}
	var shape []int
	n := 1
	for _, p := range strings.Split(s[1], ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		v, err := strconv.Atoi(p)
		if err != nil || v < 0 {
			return nil, nil, fmt.Errorf("bad shape (%s)", s[1])
		}
		shape = append(shape, v)
		n *= v
	}
	var size int
	switch d[1] {
	case "<f4", "=f4", "f4":
		size = 4
	case "<f8", "=f8", "f8":
		size = 8
	default:
		return nil, nil, fmt.Errorf("dtype %s; want little-endian float32 (<f4) or float64 (<f8)", d[1])
	}
	if len(data) != n*size {
		return nil, nil, fmt.Errorf("shape %v of %s needs %d data bytes, file has %d", shape, d[1], n*size, len(data))
	}
	x := make([]float32, n)
	for i := range x {
		if size == 4 {
			x[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
		} else {
			x[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(data[8*i:])))
		}
	}
	return x, shape, nil
}
