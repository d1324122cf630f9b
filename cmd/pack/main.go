// Command pack turns an image dataset into a packed file that training reads without decoding any image.
//
//	pack -in PATH -out FILE.pack [-size 32] [-crop 140] [-max N] [-channels C] [-skip-bad] [-pad 32] [-workers 2]
//
// PATH is a folder of JPEG/PNG images (CelebA's img_align_celeba: center crop, anti-aliased resize to size×size,
// files in name order) or Fashion-MNIST IDX data (a train-images-idx3-ubyte[.gz] file, or a directory holding one,
// such as /usr/share/datasets/fashion-mnist from `apt-get install dataset-fashion-mnist`; zero-padded to pad×pad).
// The output (format in package data, pack.go) is written atomically. On success pack prints one summary line and
// exits 0; on a usage error it exits 2, on any other failure 1.
//
// Examples:
//
//	go build -o bin/pack ./cmd/pack
//	bin/pack -in datasets/img_align_celeba -out datasets/celeba32.pack -size 32 -crop 140 -max 10000
//	bin/pack -in /usr/share/datasets/fashion-mnist -out datasets/fmnist32.pack -pad 32
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/ddpmgo/ddpm/data"
	"github.com/ddpmgo/ddpm/internal/cli"
)

// SIGINT/SIGTERM stop packing at once with status 1: the pack is written atomically, so nothing partial is left
// under its name.
func main() {
	cli.Main(func(ctx context.Context, args []string, stdout, stderr io.Writer) int {
		go func() {
			<-ctx.Done()
			fmt.Fprintln(stderr, "pack: interrupted; nothing written")
			os.Exit(cli.Runtime)
		}()
		return run(args, stdout, stderr)
	})
}

const usageText = `usage: pack -in PATH -out FILE.pack [flags]

Packs an image dataset into one checksummed file of N×C×H×W uint8 pixels that training reads directly.

PATH is one of:
  - a folder of .jpg/.jpeg/.png files (e.g. CelebA's img_align_celeba, 178x218): files are taken in name order,
    center-cropped to a -crop square, resized to -size x -size with an anti-aliased (area-aware bilinear) filter;
    alpha is composited on black, gray/CMYK/16-bit images are converted;
  - Fashion-MNIST IDX data: a train-images-idx3-ubyte[.gz] file, or a directory holding it, e.g.
    /usr/share/datasets/fashion-mnist (apt-get install dataset-fashion-mnist); the 28x28 images are zero-padded
    (centered, black) to -pad x -pad.

Examples:
  pack -in datasets/img_align_celeba -out datasets/celeba32.pack -size 32 -crop 140 -max 10000
  pack -in /usr/share/datasets/fashion-mnist -out datasets/fmnist32.pack -pad 32

Flags:
`

func run(args []string, stdout, stderr io.Writer) int {
	fs := cli.New("pack", usageText, "\nExit status: 0 packed, 1 failed (the message names the file and the problem), 2 usage error.\n", stderr)
	in := fs.String("in", "", "input: an image folder, or a Fashion-MNIST IDX file or directory (required)")
	out := fs.String("out", "", "output pack file, written atomically (required)")
	size := fs.Int("size", 32, "image folders: output side in pixels (images become size x size)")
	crop := fs.Int("crop", 140, "image folders: side of the centered square cut before resizing; 0 = largest centered square")
	maxN := fs.Int("max", 0, "keep the first N images (in file-name order for folders); 0 = all")
	channels := fs.Int("channels", 0, "3 = RGB, 1 = gray (BT.601 luma); 0 = the source's own (3 for folders, 1 for IDX)")
	skipBad := fs.Bool("skip-bad", false, "image folders: skip files that fail to decode (they are listed on stderr) instead of stopping")
	pad := fs.Int("pad", 32, "IDX: zero-pad the 28x28 images to pad x pad, centered; 0 = keep 28x28")
	workers := fs.Int("workers", 2, "image folders: decoding goroutines")
	if status, ok := fs.Parse(args); !ok {
		return status
	}
	usageErr := func(format string, a ...any) int { return fs.Usagef(format+" (see pack -h)", a...) }
	switch {
	case *in == "":
		return usageErr("-in is required")
	case *out == "":
		return usageErr("-out is required")
	case *size <= 0:
		return usageErr("-size %d must be positive", *size)
	case *crop < 0, *maxN < 0, *pad < 0, *workers < 1:
		return usageErr("-crop, -max and -pad must be >= 0 and -workers >= 1")
	case *channels != 0 && *channels != 1 && *channels != 3:
		return usageErr("-channels %d must be 0, 1 or 3", *channels)
	}
	start := time.Now()
	sum, err := data.Pack(*in, *out, data.Options{
		Size: *size, Crop: *crop, Channels: *channels, Pad: *pad,
		MaxItems: *maxN, SkipBad: *skipBad, Workers: *workers,
	})
	const maxListed = 20
	for i, b := range sum.Skipped {
		if i == maxListed {
			fmt.Fprintf(stderr, "pack: ... and %d more skipped files\n", len(sum.Skipped)-maxListed)
			break
		}
		fmt.Fprintf(stderr, "pack: skipped %v\n", b)
	}
	if err != nil {
		return fs.Fail(err)
	}
	fmt.Fprintf(stdout, "pack: %v in %.1fs\n", sum, time.Since(start).Seconds())
	return cli.OK
}
