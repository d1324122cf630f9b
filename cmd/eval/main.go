// Command eval measures a trainer checkpoint on held-out data. -nll computes the variational bound on the negative
// log-likelihood in bits per dimension (Ho et al. 2020, §3.3; package nll):
//
//	bin/eval -ckpt runs/fashion32/checkpoints/latest.safetensors -nll              Fashion-MNIST's test set, sampled t
//	bin/eval -ckpt CKPT -nll -n 500 -t 0 -json nll.json                            all T terms for 500 test images
//	bin/eval -ckpt CKPT -nll -holdout 1000                                         a folder or pack: its last 1000 images
//
// It prints one line (the bound, its standard error, its parts) on stdout, writes the same as JSON (-json), and shows
// a progress bar on stderr. Exit status: 0 success, 2 usage errors, 1 runtime failures (also an interruption).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ddpmgo/ddpm/backend"
	"github.com/ddpmgo/ddpm/checkpoint"
	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/data"
	"github.com/ddpmgo/ddpm/diffusion"
	"github.com/ddpmgo/ddpm/internal/atomicfile"
	"github.com/ddpmgo/ddpm/internal/cli"
	"github.com/ddpmgo/ddpm/model"
	"github.com/ddpmgo/ddpm/nll"
)

// SIGINT/SIGTERM cancel run's context: the evaluation stops between network evaluations and nothing is written.
func main() { cli.Main(run) }

const usageHead = `Usage: eval -ckpt PATH -nll [flags]

-nll: the variational bound on -log p(x) in bits per dimension (Ho et al. 2020, §3.3) of the checkpoint's model (EMA
weights unless -raw) on held-out images: L_T (prior) + L_0 (discretised Gaussian decoder) + the KL terms of t = 1 … T−1.
With -t 0 every term is evaluated (T network evaluations per image); with -t K, L_0 and L_T exactly and the KL terms by
an unbiased stratified estimate from K timesteps per image (1 + K evaluations). Each term is taken at one x_t ~
q(x_t | x0); the result is the mean over the images with its standard error, which covers that randomness, the
sampled timesteps and the choice of images.

Held-out data: for Fashion-MNIST (data.source = "fashion-mnist") the test set (t10k-images-idx3-ubyte.gz beside the
training file); for a folder or a pack, its last -holdout N images (train with data.max_items to keep them out);
-data PATH reads another source (shaped as for training).

Flags:
`

const usageTail = `
Exit status: 0 success, 2 usage error, 1 runtime failure (including an interruption).
`

// report is what -json writes.
type report struct {
	nll.Result
	Checkpoint string  `json:"checkpoint"`
	Step       string  `json:"step"`
	Weights    string  `json:"weights"`
	Data       string  `json:"data"`
	Estimator  string  `json:"estimator"`
	Variance   string  `json:"variance"`
	Clip       bool    `json:"clip"`
	Seed       uint64  `json:"seed"`
	Seconds    float64 `json:"seconds"`
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := cli.New("eval", usageHead, usageTail, stderr)
	ckpt := fs.String("ckpt", "", "trainer checkpoint `PATH`")
	doNLL := fs.Bool("nll", false, "compute the variational bound in bits per dimension")
	dataPath := fs.String("data", "", "held-out images: an IDX file, image folder or pack `PATH` (default: see above)")
	holdout := fs.Int("holdout", 0, "use the last `N` images of the data set (required for a folder or pack)")
	n := fs.Int("n", 0, "evaluate only the first `N` held-out images (0 = all)")
	tPer := fs.Int("t", 10, "timesteps per image: `K` stratified KL terms, or 0 for all T terms")
	batch := fs.Int("batch", 64, "(image, t) pairs per network evaluation (does not change the result)")
	seed := fs.Uint64("seed", 0, "seed of the noise of x_t and of the sampled timesteps")
	variance := fs.String("variance", "", "σ_t² of the reverse steps: beta (fixed_large) | posterior (fixed_small) (default: sample.variance)")
	clip := fs.Bool("clip", false, "clip x̂0 to [-1, 1] in the reverse mean (Ho et al.'s code: clip_denoised)")
	jsonPath := fs.String("json", "nll.json", "write the result as JSON to `FILE` (\"\" = none)")
	device := fs.Device()
	raw := fs.Bool("raw", false, "use the trained weights instead of their EMA")
	if status, ok := fs.Parse(args); !ok {
		return status
	}
	usage, fail := fs.Usagef, fs.Fail
	switch {
	case *ckpt == "":
		return usage("-ckpt PATH is required (see -h)")
	case !*doNLL:
		return usage("nothing to do: give -nll (the only evaluation so far)")
	case *batch < 1 || *n < 0 || *holdout < 0 || *tPer < 0:
		return usage("-batch %d -n %d -holdout %d -t %d: -batch must be ≥ 1, the others ≥ 0", *batch, *n, *holdout, *tPer)
	}

	text, f, err := checkpoint.Config(*ckpt)
	if err != nil {
		return fail(err)
	}
	cfg, err := config.Parse(*ckpt, []byte(text), nil)
	if err != nil {
		return fail(fmt.Errorf("checkpoint %s: stored config: %w", *ckpt, err))
	}
	T := cfg.Diffusion.Timesteps
	if *tPer > T-1 {
		return usage("-t %d: at most T − 1 = %d (or 0 for all terms)", *tPer, T-1)
	}
	vname := cfg.Sample.Variance
	if *variance != "" {
		vname = *variance
	}
	kind, err := diffusion.ParseVarianceKind(vname)
	if err != nil {
		return usage("-variance: %v", err)
	}
	images, source, err := heldOut(cfg.Data, *dataPath, *holdout)
	if err != nil {
		if errors.Is(err, errUsage) {
			return usage("%v", err)
		}
		return fail(err)
	}
	C, S := cfg.Data.Channels, cfg.Data.ImageSize
	if c, h, w := images.Shape(); c != C || h != S || w != S {
		return fail(fmt.Errorf("%s: images are %dx%dx%d; the model takes %dx%dx%d", source, c, h, w, C, S, S))
	}
	count := images.Len()
	if *n > 0 && *n < count {
		count = *n
	}
	if count < 1 {
		return fail(fmt.Errorf("%s: no images", source))
	}
	D := C * S * S
	x0 := make([]float32, count*D)
	data.ToFloat(x0, images.Pix[:count*D])

	be, closeBe, err := backend.Open(*device, cfg.Device, nil)
	if err != nil {
		return usage("%v", err)
	}
	defer closeBe()
	if err := backend.SetPrecision(be, cfg, nil); err != nil { // the checkpoint's train.precision
		return usage("%v", err)
	}
	unet, err := model.New(be, cfg.Model, C, S, *batch)
	if err != nil {
		return fail(err)
	}
	prefix, weights := checkpoint.PrefixEMA, "ema"
	if *raw {
		prefix, weights = "", "raw"
	}
	w, err := checkpoint.Weights(f, unet.Table(), prefix)
	if err != nil {
		return fail(err)
	}
	be.Upload(unet.Params(), w)
	unet.SetTrain(false, 0, 0)
	sch, err := diffusion.New(cfg.Diffusion.Schedule, T, cfg.Diffusion.BetaStart, cfg.Diffusion.BetaEnd)
	if err != nil {
		return fail(err)
	}

	bar := fs.Bar("evals")
	t0 := time.Now()
	res, err := nll.Evaluate(ctx, be, unet, sch, x0, count, D, nll.Options{Variance: kind, Clip: *clip, TPerImage: *tPer,
		Batch: *batch, Seed: *seed}, func(done, total int) {
		bar.SetTotal(total)
		bar.Update(done, "")
	})
	bar.Finish()
	if err != nil {
		if ctx.Err() != nil {
			return fail(fmt.Errorf("interrupted by a signal; nothing written (%v)", err))
		}
		return fail(err)
	}
	est := fmt.Sprintf("all %d terms per image", T)
	if res.Mode == "sampled" {
		est = fmt.Sprintf("L_T and L_0 exactly, the KL terms from %d stratified timesteps per image (unbiased)", res.TPerImage)
	}
	rep := report{Result: res, Checkpoint: *ckpt, Step: f.Metadata["step"], Weights: weights, Data: source,
		Estimator: est, Variance: vname, Clip: *clip, Seed: *seed, Seconds: time.Since(t0).Seconds()}
	if *jsonPath != "" {
		if err := atomicfile.Write(*jsonPath, func(w io.Writer) error {
			enc := json.NewEncoder(w)
			enc.SetIndent("", "  ")
			return enc.Encode(rep)
		}); err != nil {
			return fail(err)
		}
	}
	fmt.Fprintf(stdout, "nll: %.4f ± %.4f bits/dim (standard error over %d images; %s) = prior %.2g + decoder %.4f + KL %.4f; "+
		"%s, step %s, %s weights, variance %s, %d evaluations in %s\n", res.BPD, res.StdErr, res.Images, est, res.PriorBPD,
		res.DecBPD, res.KLBPD, source, rep.Step, weights, vname, res.Evals, time.Since(t0).Round(time.Second))
	return cli.OK
}

var errUsage = errors.New("usage")

// heldOut loads the held-out images: -data PATH when given, else Fashion-MNIST's test split or the last holdout images
// of the configured source, shaped as the trainer shapes its data (Fashion-MNIST padded to image_size when it is at
// least 28, otherwise resized).
func heldOut(dc config.Data, path string, holdout int) (*data.Images, string, error) {
	opts := data.Options{Size: dc.ImageSize, Crop: dc.Crop, Channels: dc.Channels, SkipBad: dc.SkipBad}
	src := path
	if src == "" {
		src = dc.Path
		switch {
		case dc.Source == "fashion-mnist" && holdout == 0:
			test, err := fashionTest(dc.Path)
			if err != nil {
				return nil, "", err
			}
			src = test
		case holdout == 0:
			return nil, "", fmt.Errorf("%w: data.source = %q: give -holdout N (the last N images of %s) or -data PATH",
				errUsage, dc.Source, dc.Path)
		}
	}
	if dc.Source == "fashion-mnist" && dc.ImageSize >= 28 {
		opts.Pad = dc.ImageSize // read by the IDX reader only
	}
	m, _, err := data.Open(src, opts)
	if err != nil {
		return nil, "", fmt.Errorf("held-out data: %w", err)
	}
	if holdout > 0 {
		if holdout > m.Len() {
			return nil, "", fmt.Errorf("%w: -holdout %d but %s holds %d images", errUsage, holdout, src, m.Len())
		}
		m.Pix = m.Pix[(m.Len()-holdout)*m.ImageSize():]
		src = fmt.Sprintf("%s (last %d images)", src, holdout)
	}
	return m, src, nil
}

// fashionTest finds Fashion-MNIST's test images beside the training data: in the directory dir, or beside the file
// dir names (train-images… → t10k-images…).
func fashionTest(path string) (string, error) {
	dir, base := path, ""
	if st, err := os.Stat(path); err == nil && !st.IsDir() {
		dir, base = filepath.Dir(path), filepath.Base(path)
	}
	cands := []string{"t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte"}
	if strings.HasPrefix(base, "train-images") {
		cands = append([]string{strings.Replace(base, "train-images", "t10k-images", 1)}, cands...)
	}
	for _, c := range cands {
		p := filepath.Join(dir, c)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("Fashion-MNIST test set: no %s in %s (apt-get install dataset-fashion-mnist installs it; or give -data PATH)",
		strings.Join(cands, " or "), dir)
}
