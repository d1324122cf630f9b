// Package safetensors reads and writes the safetensors format (huggingface/safetensors), the file format of
// PyTorch/diffusers weights, restricted to what the trainer stores: float32 tensors plus string metadata.
//
// # Format
//
//	[8 bytes]  N, the header length, little-endian uint64
//	[N bytes]  a JSON object: {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//	           "__metadata__": {"key": "value", ...}}, padded with spaces to a multiple of 8 bytes
//	[rest]     the data section: each tensor's little-endian elements, row-major, at [begin, end) relative
//	           to the start of the section; tensors are contiguous, in the order they were given, without holes
//
// Every file this package writes carries, in its metadata under ChecksumKey, the CRC-32C (Castagnoli) of the data
// section in 8 hex digits, and Read refuses a file whose data does not match it, so that a truncated or bit-flipped
// checkpoint is an error naming the file rather than a silently wrong model. Files written by other tools (without
// the key) are read without that check.
package safetensors

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
)

// ChecksumKey is the metadata key holding the CRC-32C of the data section ("%08x").
const ChecksumKey = "data_crc32c"

// maxHeader bounds the JSON header (the reference implementation allows 100 MB).
const maxHeader = 100 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Tensor is one named float32 tensor. Data holds exactly the product of Shape elements (a scalar has Shape nil and
// one element).
type Tensor struct {
	Name  string
	Shape []int
	Data  []float32
}

// numel is the product of the shape (1 for a scalar).
func numel(shape []int) int {
	n := 1
	for _, s := range shape {
		n *= s
	}
	return n
}

type entry struct {
	DType       string   `json:"dtype"`
	Shape       []int    `json:"shape"`
	DataOffsets [2]int64 `json:"data_offsets"`
}

// Write encodes tensors and metadata to w. The checksum is added to the metadata (a caller's value under
// ChecksumKey is replaced). Names must be unique and non-empty and may not be "__metadata__".
func Write(w io.Writer, tensors []Tensor, metadata map[string]string) error {
	seen := make(map[string]bool, len(tensors))
	for _, t := range tensors {
		if t.Name == "" || t.Name == "__metadata__" {
			return fmt.Errorf("safetensors: write: invalid tensor name %q", t.Name)
		}
		if seen[t.Name] {
			return fmt.Errorf("safetensors: write: duplicate tensor name %q", t.Name)
		}
		seen[t.Name] = true
		for _, s := range t.Shape {
			if s < 0 {
				return fmt.Errorf("safetensors: write: tensor %q has negative shape %v", t.Name, t.Shape)
			}
		}
		if n := numel(t.Shape); n != len(t.Data) {
			return fmt.Errorf("safetensors: write: tensor %q shape %v wants %d elements, has %d", t.Name, t.Shape, n, len(t.Data))
		}
	}

	// First pass: the checksum of the data section, so that it can sit in the header in front of the data.
	buf := make([]byte, 1<<16)
	crc := uint32(0)
	forEachChunk(tensors, buf, func(b []byte) error {
		crc = crc32.Update(crc, castagnoli, b)
		return nil
	})

	header := make(map[string]any, len(tensors)+1)
	meta := make(map[string]string, len(metadata)+1)
	for k, v := range metadata {
		meta[k] = v
	}
	meta[ChecksumKey] = fmt.Sprintf("%08x", crc)
	header["__metadata__"] = meta
	var off int64
	for _, t := range tensors {
		size := int64(len(t.Data)) * 4
		shape := t.Shape
		if shape == nil {
			shape = []int{}
		}
		header[t.Name] = entry{DType: "F32", Shape: shape, DataOffsets: [2]int64{off, off + size}}
		off += size
	}
	js, err := json.Marshal(header)
	if err != nil {
		return fmt.Errorf("safetensors: write: header: %w", err)
	}
	for len(js)%8 != 0 {
		js = append(js, ' ')
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(js)))
	if _, err := bw.Write(lenBuf[:]); err != nil {
		return fmt.Errorf("safetensors: write: %w", err)
	}
	if _, err := bw.Write(js); err != nil {
		return fmt.Errorf("safetensors: write: %w", err)
	}
	if err := forEachChunk(tensors, buf, func(b []byte) error {
		_, err := bw.Write(b)
		return err
	}); err != nil {
		return fmt.Errorf("safetensors: write: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("safetensors: write: %w", err)
	}
	return nil
}

// forEachChunk calls fn with the little-endian bytes of all tensors' data, in order, in chunks of at most len(buf).
func forEachChunk(tensors []Tensor, buf []byte, fn func([]byte) error) error {
	n := 0
	for _, t := range tensors {
		for _, v := range t.Data {
			binary.LittleEndian.PutUint32(buf[n:], math.Float32bits(v))
			n += 4
			if n == len(buf) {
				if err := fn(buf); err != nil {
					return err
				}
				n = 0
			}
		}
	}
	if n > 0 {
		return fn(buf[:n])
	}
	return nil
}

// File is a decoded safetensors file.
type File struct {
	Path     string
	Tensors  []Tensor // in data-offset order
	Metadata map[string]string
	byName   map[string]int
}

// Get returns the tensor called name.
func (f *File) Get(name string) (Tensor, bool) {
	i, ok := f.byName[name]
	if !ok {
		return Tensor{}, false
	}
	return f.Tensors[i], true
}

// ReadFile reads and verifies the file at path; every error names it.
func ReadFile(path string) (*File, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %w", err)
	}
	f, err := Decode(src)
	if err != nil {
		return nil, fmt.Errorf("safetensors: %s: %w", path, err)
	}
	f.Path = path
	return f, nil
}

// ErrChecksum is returned (wrapped) when the data section does not match the stored CRC-32C.
var ErrChecksum = errors.New("data checksum mismatch (the file is damaged)")

// Decode parses a whole safetensors file held in memory. It accepts F32 tensors only, checks that the data
// offsets tile the data section exactly, and verifies ChecksumKey when present.
func Decode(src []byte) (*File, error) {
	if len(src) < 8 {
		return nil, fmt.Errorf("file is %d bytes, shorter than the 8-byte header length (truncated?)", len(src))
	}
	n := binary.LittleEndian.Uint64(src[:8])
	if n > maxHeader || n > uint64(len(src)-8) {
		return nil, fmt.Errorf("header length %d does not fit in a %d-byte file (truncated or not safetensors)", n, len(src))
	}
	hdr := src[8 : 8+n]
	data := src[8+n:]
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(hdr, &raw); err != nil {
		return nil, fmt.Errorf("header is not valid JSON: %w", err)
	}
	f := &File{Metadata: map[string]string{}, byName: map[string]int{}}
	type named struct {
		name string
		e    entry
	}
	var ents []named
	for k, v := range raw {
		if k == "__metadata__" {
			if err := json.Unmarshal(v, &f.Metadata); err != nil {
				return nil, fmt.Errorf("__metadata__ is not a string map: %w", err)
			}
			continue
		}
		var e entry
		if err := json.Unmarshal(v, &e); err != nil {
			return nil, fmt.Errorf("tensor %q: bad header entry: %w", k, err)
		}
		if e.DType != "F32" {
			return nil, fmt.Errorf("tensor %q: dtype %s; only F32 is supported", k, e.DType)
		}
		ents = append(ents, named{k, e})
	}
	sort.Slice(ents, func(i, j int) bool {
		if ents[i].e.DataOffsets[0] != ents[j].e.DataOffsets[0] {
			return ents[i].e.DataOffsets[0] < ents[j].e.DataOffsets[0]
		}
		return ents[i].name < ents[j].name
	})
	var off int64
	for _, ne := range ents {
		b, e := ne.e.DataOffsets[0], ne.e.DataOffsets[1]
		for _, s := range ne.e.Shape {
			if s < 0 {
				return nil, fmt.Errorf("tensor %q: negative shape %v", ne.name, ne.e.Shape)
			}
		}
		want := int64(numel(ne.e.Shape)) * 4
		if b != off || e-b != want {
			return nil, fmt.Errorf("tensor %q: data offsets [%d, %d) do not follow the previous tensor at %d with %d bytes for shape %v",
				ne.name, b, e, off, want, ne.e.Shape)
		}
		if e > int64(len(data)) {
			return nil, fmt.Errorf("tensor %q: data offsets [%d, %d) run past the %d-byte data section (truncated?)", ne.name, b, e, len(data))
		}
		off = e
	}
	if off != int64(len(data)) {
		return nil, fmt.Errorf("data section is %d bytes but the tensors cover %d (truncated or trailing bytes)", len(data), off)
	}
	if want, ok := f.Metadata[ChecksumKey]; ok {
		w, err := strconv.ParseUint(want, 16, 32)
		if err != nil {
			return nil, fmt.Errorf("metadata %s = %q is not 8 hex digits", ChecksumKey, want)
		}
		if got := crc32.Checksum(data, castagnoli); got != uint32(w) {
			return nil, fmt.Errorf("%w: crc32c %08x, header says %08x", ErrChecksum, got, w)
		}
	}
	f.Tensors = make([]Tensor, len(ents))
	for i, ne := range ents {
		b := data[ne.e.DataOffsets[0]:ne.e.DataOffsets[1]]
		vals := make([]float32, len(b)/4)
		for j := range vals {
			vals[j] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*j:]))
		}
		f.Tensors[i] = Tensor{Name: ne.name, Shape: ne.e.Shape, Data: vals}
		f.byName[ne.name] = i
	}
	return f, nil
}
