package train

import (
	"fmt"

	"go.uber.org/zap"

	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/data"
)

// fashionSide is the side of Fashion-MNIST's images.
const fashionSide = 28

// openDataset loads the images of cfg. Fashion-MNIST's 28×28 images are zero-padded (centred) to image_size when
// it is at least 28, and shrunk by area averaging when it is smaller (configs/tiny.toml trains at 16×16).
func openDataset(cfg config.Data, log *zap.Logger) (data.Dataset, error) {
	opts := data.Options{Size: cfg.ImageSize, Crop: cfg.Crop, Channels: cfg.Channels, MaxItems: cfg.MaxItems, SkipBad: cfg.SkipBad}
	shrink := false
	if cfg.Source == "fashion-mnist" {
		if cfg.ImageSize >= fashionSide {
			opts.Pad = cfg.ImageSize
		} else {
			shrink = true
		}
	}
	m, rep, err := data.Open(cfg.Path, opts)
	if err != nil {
		return nil, fmt.Errorf("train: data: %w", err)
	}
	if shrink && m.H > cfg.ImageSize {
		m = shrinkImages(m, cfg.ImageSize)
	}
	log.Info("data", zap.String("kind", string(rep.Kind)), zap.String("source", rep.Source), zap.Int("images", m.Len()),
		zap.Int("channels", m.C), zap.Int("height", m.H), zap.Int("width", m.W), zap.Int("skipped_bad_files", len(rep.Skipped)))
	return m, nil
}

// shrinkImages resizes every image to size×size by area averaging: output pixel (i, j) is the mean of the input
// over the square [i·H/size, (i+1)·H/size) × [j·W/size, (j+1)·W/size), each input pixel weighted by the area it
// shares with that square (a box filter, exact for any ratio), rounded to the nearest byte.
func shrinkImages(m *data.Images, size int) *data.Images {
	wy := boxWeights(m.H, size)
	wx := boxWeights(m.W, size)
	out := &data.Images{C: m.C, H: size, W: size, Pix: make([]uint8, m.Len()*m.C*size*size)}
	for n := 0; n < m.Len(); n++ {
		src := m.At(n)
		dst := out.At(n)
		for c := 0; c < m.C; c++ {
			plane := src[c*m.H*m.W : (c+1)*m.H*m.W]
			for i := 0; i < size; i++ {
				for j := 0; j < size; j++ {
					var s float64
					for _, a := range wy[i] {
						for _, b := range wx[j] {
							s += a.w * b.w * float64(plane[a.i*m.W+b.i])
						}
					}
					dst[c*size*size+i*size+j] = uint8(min(255, s+0.5))
				}
			}
		}
	}
	return out
}

type tap struct {
	i int
	w float64
}

// boxWeights returns, for each of out output pixels, the input pixels of [0, in) it covers and their weights
// (overlap length · out/in, so each output's weights sum to 1).
func boxWeights(in, out int) [][]tap {
	ws := make([][]tap, out)
	r := float64(in) / float64(out)
	for o := range ws {
		lo, hi := float64(o)*r, float64(o+1)*r
		for i := int(lo); i < in && float64(i) < hi; i++ {
			ov := min(hi, float64(i+1)) - max(lo, float64(i))
			if ov > 0 {
				ws[o] = append(ws[o], tap{i, ov / r})
			}
		}
	}
	return ws
}
