package data

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Kind names the kind of source Open found.
type Kind string

const (
	KindPack   Kind = "pack"
	KindIDX    Kind = "idx"
	KindFolder Kind = "folder"
)

// Report says what Open loaded.
type Report struct {
	Kind    Kind
	Source  string    // the file or folder actually read (for an IDX directory, the images file in it)
	Skipped []BadFile // folder files left out under SkipBad; log len(Skipped)
}

// Open loads a dataset, choosing the reader by what path is:
//   - a file starting with "DDPMPACK": a pack (ReadPack); MaxItems keeps the first images, other options are
//     ignored because the pack's shape was fixed when it was made — the caller checks Shape() against its model;
//   - a file starting with the gzip magic or the IDX magic 00 00 08: Fashion-MNIST images (LoadFashionMNIST);
//   - a directory holding train-images-idx3-ubyte(.gz): Fashion-MNIST (LoadFashionMNIST);
//   - any other directory: a folder of JPEG/PNG images (LoadFolder).
func Open(path string, opts Options) (*Images, Report, error) {
	st, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, Report{}, missingError(path)
		}
		return nil, Report{}, fmt.Errorf("data: open %s: %w", path, err)
	}
	if st.IsDir() {
		if f := findIDXImages(path); f != "" {
			m, err := LoadFashionMNIST(f, opts)
			return m, Report{Kind: KindIDX, Source: f}, err
		}
		m, bad, err := LoadFolder(path, opts)
		return m, Report{Kind: KindFolder, Source: path, Skipped: bad}, err
	}
	kind, err := sniff(path)
	if err != nil {
		return nil, Report{}, err
	}
	switch kind {
	case KindPack:
		m, err := ReadPack(path)
		if err != nil {
			return nil, Report{}, err
		}
		if opts.MaxItems < 0 {
			return nil, Report{}, fmt.Errorf("data: pack %s: MaxItems %d is negative", path, opts.MaxItems)
		}
		m.Truncate(opts.MaxItems)
		return m, Report{Kind: KindPack, Source: path}, nil
	default:
		m, err := LoadFashionMNIST(path, opts)
		return m, Report{Kind: KindIDX, Source: path}, err
	}
}

// sniff tells a pack file from an IDX file by their first bytes.
func sniff(path string) (Kind, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("data: open %s: %w", path, err)
	}
	defer f.Close()
	var b [8]byte
	n, err := io.ReadFull(f, b[:])
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("data: open %s: %w", path, err)
	}
	switch {
	case n == 8 && string(b[:]) == PackMagic:
		return KindPack, nil
	case n >= 2 && b[0] == 0x1f && b[1] == 0x8b, n >= 3 && b[0] == 0 && b[1] == 0 && b[2] == idxTypeUint8:
		return KindIDX, nil
	}
	return "", fmt.Errorf("data: open %s: not a pack file (magic %q), an IDX file (00 00 08 ..) or a gzip'd IDX file; "+
		"first bytes % x. Image files are read from a folder: pass the folder", path, PackMagic, b[:n])
}

// missingError explains how to get the data a missing path was meant to hold.
func missingError(path string) error {
	lower := strings.ToLower(path)
	switch {
	case strings.Contains(lower, "mnist") || strings.Contains(lower, "idx"):
		_, err := fashionImageFile(path)
		return err
	case strings.HasSuffix(lower, ".pack"):
		_, err := ReadPack(path)
		return err
	}
	return fmt.Errorf("data: %s does not exist. For CelebA put the aligned JPEGs there (unzip img_align_celeba.zip so "+
		"that the folder holds 000001.jpg …) and pack them once with `bin/pack -in FOLDER -out datasets/celeba32.pack "+
		"-size 32 -crop 140` (build it with `go build -o bin/pack ./cmd/pack`); for Fashion-MNIST run "+
		"`apt-get install dataset-fashion-mnist` and use %s", path, FashionMNISTDir)
}

// PackSummary describes a pack that Pack wrote.
type PackSummary struct {
	Out        string
	Kind       Kind   // the source kind
	Source     string // the file or folder read
	N, C, H, W int
	Bytes      int64 // file size, header included
	PixelCRC   uint32
	Skipped    []BadFile
}

func (s PackSummary) String() string {
	return fmt.Sprintf("packed %d images %dx%dx%d from %s %s into %s (%d bytes, crc32c %08x, %d bad files skipped)",
		s.N, s.C, s.H, s.W, s.Kind, s.Source, s.Out, s.Bytes, s.PixelCRC, len(s.Skipped))
}

// Pack loads in (an image folder or Fashion-MNIST IDX file/directory, as Open) with opts and writes it to out
// atomically. It is what cmd/pack runs. Packing a pack is refused (it would only copy it).
func Pack(in, out string, opts Options) (PackSummary, error) {
	if st, err := os.Stat(in); err == nil && !st.IsDir() {
		if k, err := sniff(in); err == nil && k == KindPack {
			return PackSummary{}, fmt.Errorf("data: pack: input %s is already a pack file", in)
		}
	}
	m, rep, err := Open(in, opts)
	if err != nil {
		return PackSummary{Skipped: rep.Skipped}, err
	}
	if err := WritePack(out, m); err != nil {
		return PackSummary{Skipped: rep.Skipped}, err
	}
	h, _ := packHeaderFor(m)
	return PackSummary{
		Out: out, Kind: rep.Kind, Source: rep.Source,
		N: m.Len(), C: m.C, H: m.H, W: m.W,
		Bytes:    PackHeaderSize + int64(len(m.Pix)),
		PixelCRC: h.PixelCRC,
		Skipped:  rep.Skipped,
	}, nil
}
