package data

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
)

// Packed format (version 1): a 36-byte little-endian header, then the N·C·H·W pixel bytes exactly as Images.Pix.
//
//	offset size  field
//	 0      8    magic "DDPMPACK"
//	 8      4    version (1)
//	12      4    N  images
//	16      4    C  channels
//	20      4    H  height
//	24      4    W  width
//	28      4    CRC-32C (Castagnoli) of the pixel bytes
//	32      4    CRC-32C of header bytes [0, 32)
//
// The file size must be exactly 36 + N·C·H·W. The header checksum catches a corrupted shape before its size is
// trusted; the pixel checksum catches corrupted pixels. A pack is made once (cmd/pack) so training decodes no image
// files; the shape and the order of images are fixed in it.
const (
	PackMagic      = "DDPMPACK"
	PackVersion    = 1
	PackHeaderSize = 36
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// PackHeader is the decoded header of a pack file.
type PackHeader struct {
	Version    uint32
	N, C, H, W uint32
	PixelCRC   uint32
}

// PixelBytes is N·C·H·W.
func (h PackHeader) PixelBytes() uint64 {
	return uint64(h.N) * uint64(h.C) * uint64(h.H) * uint64(h.W)
}

func (h PackHeader) encode() [PackHeaderSize]byte {
	var b [PackHeaderSize]byte
	copy(b[0:8], PackMagic)
	le := binary.LittleEndian
	le.PutUint32(b[8:], h.Version)
	le.PutUint32(b[12:], h.N)
	le.PutUint32(b[16:], h.C)
	le.PutUint32(b[20:], h.H)
	le.PutUint32(b[24:], h.W)
	le.PutUint32(b[28:], h.PixelCRC)
	le.PutUint32(b[32:], crc32.Checksum(b[:32], castagnoli))
	return b
}

// EncodePack returns the whole pack file for m as bytes (header and pixels).
func EncodePack(m *Images) ([]byte, error) {
	h, err := packHeaderFor(m)
	if err != nil {
		return nil, err
	}
	hb := h.encode()
	return append(hb[:], m.Pix...), nil
}

func packHeaderFor(m *Images) (PackHeader, error) {
	if err := m.Validate(); err != nil {
		return PackHeader{}, err
	}
	for _, v := range []int{m.Len(), m.C, m.H, m.W} {
		if v > math.MaxUint32 {
			return PackHeader{}, fmt.Errorf("data: pack: shape %dx%dx%dx%d does not fit uint32 fields", m.Len(), m.C, m.H, m.W)
		}
	}
	return PackHeader{
		Version: PackVersion,
		N:       uint32(m.Len()), C: uint32(m.C), H: uint32(m.H), W: uint32(m.W),
		PixelCRC: crc32.Checksum(m.Pix, castagnoli),
	}, nil
}

// WritePack writes m to path atomically: it writes a temporary file in the same directory, fsyncs it, renames it
// over path and fsyncs the directory, so a crash leaves either the old file or the complete new one.
func WritePack(path string, m *Images) (err error) {
	h, err := packHeaderFor(m)
	if err != nil {
		return fmt.Errorf("data: writing pack %s: %w", path, err)
	}
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("data: writing pack %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
			err = fmt.Errorf("data: writing pack %s: %w", path, err)
		}
	}()
	hb := h.encode()
	w := bufio.NewWriterSize(f, 1<<20)
	if _, err = w.Write(hb[:]); err != nil {
		return err
	}
	if _, err = w.Write(m.Pix); err != nil {
		return err
	}
	if err = w.Flush(); err != nil {
		return err
	}
	if err = f.Chmod(0o644); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ReadPack reads a pack file. It refuses, with an error naming the file and the problem, a wrong magic, an
// unknown version, a header checksum mismatch, a file whose size is not 36 + N·C·H·W (truncated or with trailing
// bytes), a zero dimension, and a pixel checksum mismatch.
func ReadPack(path string) (*Images, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("data: pack %s does not exist; make it with `bin/pack -in SOURCE -out %s` "+
				"(SOURCE: an image folder such as img_align_celeba, or %s for Fashion-MNIST)", path, path, FashionMNISTDir)
		}
		return nil, fmt.Errorf("data: pack: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("data: pack %s: %w", path, err)
	}
	return readPack(f, st.Size(), path)
}

// DecodePack parses a whole pack file held in b; name is used in errors.
func DecodePack(b []byte, name string) (*Images, error) {
	return readPack(bytes.NewReader(b), int64(len(b)), name)
}

// readPack parses a pack of the given total size from r.
func readPack(r io.Reader, size int64, name string) (*Images, error) {
	var hb [PackHeaderSize]byte
	if size < PackHeaderSize {
		return nil, fmt.Errorf("data: pack %s: truncated: %d bytes, shorter than the %d-byte header", name, size, PackHeaderSize)
	}
	if _, err := io.ReadFull(r, hb[:]); err != nil {
		return nil, fmt.Errorf("data: pack %s: reading header: %w", name, noEOF(err))
	}
	if string(hb[:8]) != PackMagic {
		return nil, fmt.Errorf("data: pack %s: wrong magic %q, want %q: not a pack file", name, hb[:8], PackMagic)
	}
	le := binary.LittleEndian
	h := PackHeader{
		Version: le.Uint32(hb[8:]),
		N:       le.Uint32(hb[12:]), C: le.Uint32(hb[16:]), H: le.Uint32(hb[20:]), W: le.Uint32(hb[24:]),
		PixelCRC: le.Uint32(hb[28:]),
	}
	if h.Version != PackVersion {
		return nil, fmt.Errorf("data: pack %s: unknown version %d (this reader knows version %d)", name, h.Version, PackVersion)
	}
	if got, want := crc32.Checksum(hb[:32], castagnoli), le.Uint32(hb[32:]); got != want {
		return nil, fmt.Errorf("data: pack %s: header checksum mismatch (stored %08x, computed %08x): the header is corrupt", name, want, got)
	}
	if h.N == 0 || h.C == 0 || h.H == 0 || h.W == 0 {
		return nil, fmt.Errorf("data: pack %s: shape %dx%dx%dx%d has a zero dimension", name, h.N, h.C, h.H, h.W)
	}
	want := PackHeaderSize + h.PixelBytes()
	if uint64(size) != want {
		what := "truncated"
		if uint64(size) > want {
			what = "trailing bytes"
		}
		return nil, fmt.Errorf("data: pack %s: %s: shape %dx%dx%dx%d needs %d bytes, file has %d", name, what, h.N, h.C, h.H, h.W, want, size)
	}
	if h.PixelBytes() > math.MaxInt {
		return nil, fmt.Errorf("data: pack %s: %d pixel bytes do not fit in memory", name, h.PixelBytes())
	}
	m := &Images{C: int(h.C), H: int(h.H), W: int(h.W), Pix: make([]uint8, h.PixelBytes())}
	if _, err := io.ReadFull(r, m.Pix); err != nil {
		return nil, fmt.Errorf("data: pack %s: truncated while reading %d pixel bytes: %w", name, len(m.Pix), noEOF(err))
	}
	if got := crc32.Checksum(m.Pix, castagnoli); got != h.PixelCRC {
		return nil, fmt.Errorf("data: pack %s: pixel checksum mismatch (stored %08x, computed %08x): the pixel data is corrupt", name, h.PixelCRC, got)
	}
	return m, nil
}
