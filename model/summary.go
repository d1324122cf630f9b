package model

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/ops"
)

// CountParams is the number of scalar parameters of the U-Net of cfg for images of
// inChannels channels (the sum over the parameter table). The image size does not
// enter, so the attention of down and up blocks, placed by resolution, is not
// counted (use Summary, which takes the size, for such configs). It returns 0 for a
// config the U-Net cannot be built from.
func CountParams(cfg config.Model, inChannels int) int {
	p, err := newPlan(cfg, inChannels, 0)
	if err != nil {
		return 0
	}
	return p.numParams
}

// bytesPerElem is the size of a float32 element on the training backends.
const bytesPerElem = 4

// Summary describes the U-Net of cfg for inChannels×imageSize×imageSize images at
// the given batch without building it: a printable table of its blocks (parameters
// and output shape), the parameter count, and the bytes one training step needs,
//
//	5 × params × 4     (parameters, gradients, AdamW's m and v, the EMA copy)
//	+ workspace × 4    (saved activations, inter-module gradients, scratch, at batch)
//
// The caller's own batch buffers (images, noise, timesteps) are not included. For a
// config the U-Net cannot be built from, the table holds the error and the counts are 0.
func Summary(cfg config.Model, inChannels, imageSize, batch int) (string, int, int64) {
	return SummaryKept(cfg, inChannels, imageSize, batch, nil)
}

// SummaryKept is Summary with the convolution inputs that a backend keeps in fewer bytes (ops.ConvInputKeeper)
// counted at keptPer's length per sample (its KeptLen at N = 1; 0 or a nil keptPer: saved as float32), their
// float32 forms in scratch: the workspace of a UNet on that backend.
func SummaryKept(cfg config.Model, inChannels, imageSize, batch int, keptPer func(ops.ConvShape) int) (string, int, int64) {
	p, err := newPlan(cfg, inChannels, imageSize)
	if err != nil {
		return "model summary: " + err.Error() + "\n", 0, 0
	}
	var sb strings.Builder
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "block\tparameters\toutput shape\t\n")
	for _, b := range p.blocks {
		fmt.Fprintf(tw, "%s\t%s\t[%d, %d, %d, %d]\t\n", b.name, group(int64(b.params)), batch, b.out[0], b.out[1], b.out[2])
	}
	fmt.Fprintf(tw, "total\t%s\t\t\n", group(int64(p.numParams)))
	tw.Flush()

	l := p.layout(keptPer)
	state := 5 * int64(p.numParams) * bytesPerElem
	ws := int64(batch) * int64(l.perSample) * bytesPerElem
	fmt.Fprintf(&sb, "forward: %.3f GFLOP per image (%.1f GFLOP per training step of %d, counted as 3 × forward)\n",
		float64(p.flops(1))/1e9, 3*float64(p.flops(batch))/1e9, batch)
	fmt.Fprintf(&sb, "memory per training step at batch %d: %s\n", batch, mib(state+ws))
	fmt.Fprintf(&sb, "  parameters, gradients, AdamW m and v, EMA: 5 × %s = %s\n", mib(int64(p.numParams)*bytesPerElem), mib(state))
	fmt.Fprintf(&sb, "  workspace: %s (saved activations %s, activation gradients %s, scratch %s)\n", mib(ws),
		mib(int64(batch)*int64(l.savedPer)*bytesPerElem), mib(int64(batch)*int64(l.gradPer)*bytesPerElem),
		mib(int64(batch)*int64(l.scratchPer)*bytesPerElem))
	return sb.String(), p.numParams, state + ws
}

func (p *plan) flops(n int) int64 {
	var f int64
	for _, l := range p.layers {
		f += l.flops(n)
	}
	return f
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// group writes n with thousands separators: 14406531 → "14,406,531".
func group(n int64) string {
	s := fmt.Sprint(n)
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}

// Table lists the parameters of the U-Net of cfg for inChannels×imageSize² images in
// buffer order, as UNet.Table would, without allocating the model: the layout a
// checkpoint or an exported folder is read and written with.
func Table(cfg config.Model, inChannels, imageSize int) ([]Param, error) {
	p, err := newPlan(cfg, inChannels, imageSize)
	if err != nil {
		return nil, err
	}
	return p.params, nil
}

// LargestTensor is the size per image, in elements, of the U-Net's largest workspace tensor (an activation or its
// gradient) for inChannels×imageSize² images: the most that a backend copying one op's operands into layouts of its
// own (the CPU's oneDNN convolutions) holds per operand. It is 0 for a config the U-Net cannot be built from.
func LargestTensor(cfg config.Model, inChannels, imageSize int) int {
	p, err := newPlan(cfg, inChannels, imageSize)
	if err != nil {
		return 0
	}
	m := 0
	for _, t := range p.tensors {
		m = max(m, t.per)
	}
	return m
}
