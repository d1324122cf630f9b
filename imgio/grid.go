// Package imgio turns float32 image batches into files: PNG grids of samples and NumPy .npy arrays.
package imgio

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
)

// Pad is the border in pixels around and between the images of a grid.
const Pad = 2

// ToByte maps a value in [−1, 1] to a pixel: round((v + 1)·127.5), clamped to [0, 255]; NaN maps to 0.
func ToByte(v float32) uint8 {
	f := (float64(v) + 1) * 127.5
	if !(f > 0) {
		return 0
	}
	if f >= 255 {
		return 255
	}
	return uint8(math.Floor(f + 0.5))
}

// Grid lays out n images of c×h×w float32 values in [−1, 1] (NCHW, c = 1 or 3) in a grid of cols columns
// (cols ≤ 0: ⌈√n⌉) with Pad pixels of black between and around them, as torchvision's make_grid.
// One channel gives a gray image, three an RGB one.
func Grid(x []float32, n, c, h, w, cols int) (image.Image, error) {
	if n <= 0 || h <= 0 || w <= 0 || (c != 1 && c != 3) {
		return nil, fmt.Errorf("imgio: grid of %d images %dx%dx%d: need n, h, w > 0 and 1 or 3 channels", n, c, h, w)
	}
	if len(x) < n*c*h*w {
		return nil, fmt.Errorf("imgio: grid of %d images %dx%dx%d needs %d values, have %d", n, c, h, w, n*c*h*w, len(x))
	}
	if cols <= 0 {
		cols = int(math.Ceil(math.Sqrt(float64(n))))
	}
	rows := (n + cols - 1) / cols
	W := cols*(w+Pad) + Pad
	H := rows*(h+Pad) + Pad
	r := image.Rect(0, 0, W, H)
	var gray *image.Gray
	var rgb *image.NRGBA
	if c == 1 {
		gray = image.NewGray(r)
	} else {
		rgb = image.NewNRGBA(r)
		for i := 3; i < len(rgb.Pix); i += 4 {
			rgb.Pix[i] = 255
		}
	}
	hw := h * w
	for k := 0; k < n; k++ {
		x0 := Pad + (k%cols)*(w+Pad)
		y0 := Pad + (k/cols)*(h+Pad)
		img := x[k*c*hw : (k+1)*c*hw]
		for i := 0; i < h; i++ {
			for j := 0; j < w; j++ {
				if c == 1 {
					gray.SetGray(x0+j, y0+i, color.Gray{Y: ToByte(img[i*w+j])})
				} else {
					rgb.SetNRGBA(x0+j, y0+i, color.NRGBA{
						R: ToByte(img[i*w+j]), G: ToByte(img[hw+i*w+j]), B: ToByte(img[2*hw+i*w+j]), A: 255})
				}
			}
		}
	}
	if c == 1 {
		return gray, nil
	}
	return rgb, nil
}

// WriteGridPNG encodes Grid(x, n, c, h, w, 0) as PNG to out.
func WriteGridPNG(out io.Writer, x []float32, n, c, h, w int) error {
	img, err := Grid(x, n, c, h, w, 0)
	if err != nil {
		return err
	}
	if err := png.Encode(out, img); err != nil {
		return fmt.Errorf("imgio: png: %w", err)
	}
	return nil
}
