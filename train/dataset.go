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
// it is at least 28, and shrunk by package data's anti-aliased resize (the filter of image folders) when it is
// smaller (configs/tiny.toml trains at 16×16).
func openDataset(cfg config.Data, log *zap.Logger) (data.Dataset, error) {
	opts := data.Options{Size: cfg.ImageSize, Crop: cfg.Crop, Channels: cfg.Channels, MaxItems: cfg.MaxItems, SkipBad: cfg.SkipBad}
	if cfg.Source == "fashion-mnist" && cfg.ImageSize >= fashionSide {
		opts.Pad = cfg.ImageSize
	}
	m, rep, err := data.Open(cfg.Path, opts)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err) // data's errors start with "data:"
	}
	log.Info("data", zap.String("kind", string(rep.Kind)), zap.String("source", rep.Source), zap.Int("images", m.Len()),
		zap.Int("channels", m.C), zap.Int("height", m.H), zap.Int("width", m.W), zap.Int("skipped_bad_files", len(rep.Skipped)))
	return m, nil
}
