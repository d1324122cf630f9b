package model

import (
	"fmt"
	"math"
	"strings"

	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/ops"
)

// Param is one named tensor of the flat parameter buffer: its diffusers state-dict
// key, its shape (torch layout: conv weights [Cout, Cin, K, K], linear weights
// [Out, In]) and the range [Offset, Offset+Size) it occupies in Params() and Grads().
type Param struct {
	Name         string
	Shape        []int
	Offset, Size int
}

// initKind says how Init draws a parameter: PyTorch's default for its layer type.
type initKind int

const (
	initUniform initKind = iota // Conv2d/Linear weight and bias: U(−1/√fan_in, 1/√fan_in)
	initOnes                    // GroupNorm weight
	initZeros                   // GroupNorm bias
)

type initSpec struct {
	kind  initKind
	fanIn int // Cin·K·K of the conv or In of the linear that owns the tensor
}

// Tensor kinds of the workspace.
const (
	kindSaved   = iota // a forward activation kept for backward
	kindGrad           // the gradient of a module's input or output, zeroed once per Backward
	kindScratch        // a temporary living in a shared slot, dead once its op sequence ends
)

// tensorSpec is one workspace tensor: `per` elements per sample. All tensors scale
// linearly with the batch, so for batch n a tensor at per-sample offset o lives at
// n·o with length n·per, and the workspace of any batch ≤ maxBatch is compact.
type tensorSpec struct {
	name string
	per  int
	kind int
	slot int // scratch slot, for kindScratch
	keep int // for a keptIn's tensor: its index in plan.keeps, plus 1 (0: none)
}

// Reserved tensor ids: buffers that the caller owns and passes per call.
const (
	idInput     = iota // x of Forward
	idInputGrad        // dL/dx (only for tests; nil otherwise)
	idOutGrad          // dout of Backward
	numReserved
)

// act is an activation flowing between modules: its value tensor, the tensor that
// accumulates its gradient, and its shape per sample.
type act struct {
	v, g    int
	c, h, w int
}

func (a act) hw() int { return a.h * a.w }

// Layer parameter handles: indices into the parameter table.
type convP struct {
	w, b                   int
	cin, cout, k, str, pad int
	padEnd                 int // zeros after the input beyond pad (ops.ConvShape.PadEnd)
}

type normP struct {
	w, b, c int
}

type linP struct {
	w, b, in, out int
}

// blockInfo is a row of the Summary table.
type blockInfo struct {
	name   string
	params int
	out    [3]int // C, H, W of the block's output
}

// plan is the whole U-Net laid out without a backend: the parameter table, the
// workspace tensors and the module sequence. New attaches buffers to it; Summary and
// CountParams read it alone.
type plan struct {
	cfg       config.Model
	in, size  int
	groups    int
	eps       float32
	dropout   float32
	tembDim   int
	params    []Param
	inits     []initSpec
	numParams int
	tensors   []tensorSpec
	slotPer   []int // per-sample size of each scratch slot
	layers    []layer
	layerEnd  []int // per layer: len(params) after it was added (it owns params[layerEnd[i−1]:layerEnd[i]])
	blocks    []blockInfo
	dropPer   int // dropout draws per sample and step
	out       act
	tact      act            // SiLU(temb), the input of every resnet's time projection
	convs     []convP        // every convolution, in the order of the plan (forward order): model.UNet.convW
	tembs     []tembEntry    // every resnet's time_emb_proj, in forward order (from the first pass; newPlan)
	tproj     *tembProjLayer // the resnets' time_emb_proj stacked into one layer (second pass)
	tembNext  int            // the next entry of tembs a resnet takes
	listing   bool           // the first pass: the resnets list their time projections in tembs
	keeps     []keptIn       // the convolution inputs a backend may keep (keptIn), in plan order
}

// Check reports why the U-Net of cfg cannot be built for inChannels-channel images of
// imageSize² pixels (nil when it can; a non-positive imageSize skips the checks that
// need it).
func Check(cfg config.Model, inChannels, imageSize int) error {
	return validate(cfg, inChannels, imageSize)
}

// validate checks what the plan needs of a model config and image size (the same
// rules as config.Validate, repeated so that a plan built from code fails clearly).
func validate(cfg config.Model, inChannels, imageSize int) error {
	L := len(cfg.BlockChannels)
	switch {
	case L == 0:
		return fmt.Errorf("model: block_channels is empty")
	case inChannels <= 0:
		return fmt.Errorf("model: in channels %d must be > 0", inChannels)
	case cfg.NormGroups <= 0:
		return fmt.Errorf("model: norm_groups %d must be > 0", cfg.NormGroups)
	case cfg.LayersPerBlock < 1:
		return fmt.Errorf("model: layers_per_block %d must be ≥ 1", cfg.LayersPerBlock)
	case cfg.AttentionHeadDim < 0:
		return fmt.Errorf("model: attention_head_dim %d must be ≥ 0 (0: one head per block)", cfg.AttentionHeadDim)
	case cfg.DownsamplePadding != 0 && cfg.DownsamplePadding != 1:
		return fmt.Errorf("model: downsample_padding %d must be 0 or 1", cfg.DownsamplePadding)
	case math.IsInf(cfg.FreqShift, 0) || !(float64(cfg.BlockChannels[0]/2)-cfg.FreqShift > 0) && cfg.BlockChannels[0] >= 2:
		return fmt.Errorf("model: freq_shift %g must be finite and less than block_channels[0]/2 = %d", cfg.FreqShift, cfg.BlockChannels[0]/2)
	case !(cfg.NormEps > 0):
		return fmt.Errorf("model: norm_eps %g must be > 0", cfg.NormEps)
	case !(cfg.Dropout >= 0 && cfg.Dropout < 1):
		return fmt.Errorf("model: dropout %g must be in [0, 1)", cfg.Dropout)
	}
	for i, c := range cfg.BlockChannels {
		if c <= 0 || c%cfg.NormGroups != 0 {
			return fmt.Errorf("model: block_channels[%d] = %d is not a positive multiple of norm_groups %d", i, c, cfg.NormGroups)
		}
	}
	if imageSize > 0 {
		if f := 1 << (L - 1); imageSize%f != 0 {
			return fmt.Errorf("model: image size %d is not divisible by 2^(levels−1) = %d", imageSize, f)
		}
		for _, rs := range [][]int{cfg.AttentionResolutions, cfg.DownAttentionResolutions, cfg.UpAttentionResolutions} {
			for _, r := range rs {
				found := false
				for l := 0; l < L; l++ {
					if imageSize>>l == r {
						found = true
						if c := cfg.BlockChannels[l]; c%cfg.HeadDim(c) != 0 {
							return fmt.Errorf("model: attention_head_dim %d does not divide the %d channels at resolution %d", cfg.AttentionHeadDim, c, r)
						}
					}
				}
				if !found {
					return fmt.Errorf("model: attention resolution %d is not a level of a %d-pixel, %d-level U-Net", r, imageSize, L)
				}
			}
		}
	}
	if c := cfg.BlockChannels[L-1]; cfg.MidAttention && c%cfg.HeadDim(c) != 0 {
		return fmt.Errorf("model: attention_head_dim %d does not divide the middle block's %d channels", cfg.AttentionHeadDim, cfg.BlockChannels[L-1])
	}
	return nil
}

// newPlan lays out diffusers' UNet2DModel for cfg: conv_in; the time embedding;
// per level l a DownBlock2D (AttnDownBlock2D where cfg.DownAttention) of
// layers_per_block resnets and, except at the last level, a stride-2 conv (padding 1,
// or (0, 1, 0, 1) with downsample_padding 0); the middle block; per level in reverse
// an UpBlock2D (AttnUpBlock2D where cfg.UpAttention) of layers_per_block+1 resnets
// each fed one skip by concatenation and, except at the last, nearest ×2 + conv;
// GroupNorm → SiLU → conv_out. A non-positive imageSize lays out parameters only
// (CountParams), as for 1-pixel images: the down and up blocks' attention, which is
// placed by resolution, is then left out.
// newPlan lays the U-Net out in two passes: the first lists the resnets' time projections (tembs), which the
// second stacks into one layer right after the time embedding (tembProjLayer), ahead of the resnets that use them.
func newPlan(cfg config.Model, inChannels, imageSize int) (*plan, error) {
	first, err := buildPlan(cfg, inChannels, imageSize, nil)
	if err != nil {
		return nil, err
	}
	return buildPlan(cfg, inChannels, imageSize, first.tembs)
}

// buildPlan is one pass of newPlan: with tembs nil, the resnets only record their time projections in p.tembs
// (the plan is then incomplete: it serves to list them).
func buildPlan(cfg config.Model, inChannels, imageSize int, tembs []tembEntry) (*plan, error) {
	if err := validate(cfg, inChannels, imageSize); err != nil {
		return nil, err
	}
	p := &plan{tembs: tembs, listing: tembs == nil,
		cfg: cfg, in: inChannels, size: imageSize,
		groups:  cfg.NormGroups,
		eps:     float32(cfg.NormEps),
		dropout: float32(cfg.Dropout),
		tembDim: 4 * cfg.BlockChannels[0],
	}
	p.tensors = make([]tensorSpec, numReserved)
	size := max(imageSize, 1)
	L := len(cfg.BlockChannels)
	ch := cfg.BlockChannels

	// conv_in
	mark := p.numParams
	x := act{v: idInput, g: idInputGrad, c: inChannels, h: size, w: size}
	convIn := &convLayer{x: x, p: p.conv("conv_in", inChannels, ch[0], 3, 1, 1)}
	convIn.out = p.act("conv_in", ch[0], size, size)
	p.addLayer(convIn)
	p.block("conv_in", mark, convIn.out)

	// time_proj (no parameters) + time_embedding, then SiLU once for all resnets.
	mark = p.numParams
	te := &timeLayer{dim: ch[0], tdim: p.tembDim, flip: cfg.FlipSinToCos, shift: cfg.FreqShift}
	te.l1 = p.linear("time_embedding.linear_1", ch[0], p.tembDim)
	te.l2 = p.linear("time_embedding.linear_2", p.tembDim, p.tembDim)
	te.emb = p.saved("time_proj", ch[0])
	te.h1 = p.saved("time_embedding.linear_1", p.tembDim)
	te.a1 = p.saved("time_embedding.act", p.tembDim)
	te.h2 = p.saved("time_embedding.linear_2", p.tembDim)
	te.g1 = p.grad("time_embedding.linear_1.grad", p.tembDim)
	te.ga1 = p.grad("time_embedding.act.grad", p.tembDim)
	te.g2 = p.grad("time_embedding.linear_2.grad", p.tembDim)
	te.out = p.act("time_embedding.silu", p.tembDim, 1, 1)
	p.tact = te.out
	p.addLayer(te)
	p.block("time_embedding", mark, act{c: p.tembDim, h: 1, w: 1})
	if tembs != nil {
		p.tembProj(te)
	}

	// Down path; skips is the stack of activations the up path concatenates.
	h := convIn.out
	skips := []act{h}
	for l := 0; l < L; l++ {
		mark = p.numParams
		name := fmt.Sprintf("down_blocks.%d", l)
		for j := 0; j < cfg.LayersPerBlock; j++ {
			h = p.resnet(fmt.Sprintf("%s.resnets.%d", name, j), h, ch[l])
			if cfg.DownAttention(size, l) {
				h = p.attention(fmt.Sprintf("%s.attentions.%d", name, j), h)
			}
			skips = append(skips, h)
		}
		if l < L-1 {
			pad, end := 1, 0
			if cfg.DownsamplePadding == 0 { // Downsample2D(padding=0): F.pad (0, 1, 0, 1), then conv padding 0
				pad, end = 0, 1
			}
			dp := p.conv(name+".downsamplers.0.conv", ch[l], ch[l], 3, 2, pad)
			dp.padEnd = end
			d := &convLayer{x: h, p: dp}
			d.out = p.act(name+".downsamplers.0", ch[l], h.h/2, h.w/2)
			p.addLayer(d)
			h = d.out
			skips = append(skips, h)
		}
		p.block(name, mark, h)
	}

	// Middle block.
	mark = p.numParams
	h = p.resnet("mid_block.resnets.0", h, ch[L-1])
	if cfg.MidAttention {
		h = p.attention("mid_block.attentions.0", h)
	}
	h = p.resnet("mid_block.resnets.1", h, ch[L-1])
	p.block("mid_block", mark, h)

	// Up path.
	for i := 0; i < L; i++ {
		mark = p.numParams
		l := L - 1 - i
		name := fmt.Sprintf("up_blocks.%d", i)
		for j := 0; j <= cfg.LayersPerBlock; j++ {
			s := skips[len(skips)-1]
			skips = skips[:len(skips)-1]
			cat := &concatLayer{a: h, b: s}
			cat.out = p.act(fmt.Sprintf("%s.cat.%d", name, j), h.c+s.c, h.h, h.w)
			p.addLayer(cat)
			h = p.resnet(fmt.Sprintf("%s.resnets.%d", name, j), cat.out, ch[l])
			if cfg.UpAttention(size, l) {
				h = p.attention(fmt.Sprintf("%s.attentions.%d", name, j), h)
			}
		}
		if i < L-1 {
			u := &upsampleLayer{x: h}
			u.conv = p.conv(name+".upsamplers.0.conv", ch[l], ch[l], 3, 1, 1)
			u.up = p.keep(name+".upsamplers.0.interp", u.conv.shape(1, 2*h.h, 2*h.w))
			u.gup = p.scratch(name+".upsamplers.0.interp.grad", 0, h.c*4*h.hw())
			u.out = p.act(name+".upsamplers.0", ch[l], 2*h.h, 2*h.w)
			p.addLayer(u)
			h = u.out
		}
		p.block(name, mark, h)
	}
	if len(skips) != 0 {
		panic(fmt.Sprintf("model: %d skip connections left unused", len(skips)))
	}
	if tembs != nil && p.tembNext != len(tembs) {
		panic(fmt.Sprintf("model: %d of %d stacked time projections used", p.tembNext, len(tembs)))
	}

	// Output head.
	mark = p.numParams
	o := &headLayer{x: h}
	o.norm = p.norm("conv_norm_out", ch[0])
	o.conv = p.conv("conv_out", ch[0], inChannels, 3, 1, 1)
	o.stats = p.saved("conv_norm_out.stats", 2*p.groups)
	o.a = p.keep("conv_act", o.conv.shape(1, h.h, h.w))
	o.ga = p.scratch("conv_act.grad", 0, ch[0]*h.hw())
	o.out = act{v: p.saved("conv_out", inChannels*h.hw()), g: idOutGrad, c: inChannels, h: h.h, w: h.w}
	p.out = o.out
	p.addLayer(o)
	p.block("conv_norm_out+conv_out", mark, o.out)

	return p, nil
}

// tembEntry is one resnet's time_emb_proj: its name prefix, its width (the resnet's channels) and its first column in
// the stacked projections.
type tembEntry struct {
	name     string
	out, col int
}

// tembProj adds the tembProjLayer of p.tembs: the stacked weights ([C_r, tdim] of each resnet r, rows after rows),
// then the stacked biases, each tensor under its resnet's own name; its parameters are counted in the blocks of
// their resnets (block). Its backward does the backward of te's last SiLU too (ops.LinearBackwardSiLU).
func (p *plan) tembProj(te *timeLayer) {
	l := &tembProjLayer{tact: p.tact, tpre: te.h2, dpre: te.g2, in: p.tembDim}
	te.outSiLU = true // tembProjLayer's backward does the SiLU's
	for _, e := range p.tembs {
		l.out += e.out
	}
	fan := initSpec{initUniform, p.tembDim}
	l.wOff = p.numParams
	for _, e := range p.tembs {
		p.param(e.name+".weight", fan, e.out, p.tembDim)
	}
	l.bOff = p.numParams
	for _, e := range p.tembs {
		p.param(e.name+".bias", fan, e.out)
	}
	l.z = p.saved("time_emb_proj (all resnets)", l.out)
	l.dz = p.grad("time_emb_proj (all resnets).grad", l.out) // zeroed with the gradients between modules
	p.tproj = l
	p.addLayer(l)
}

// layout is where the workspace tensors lie, per sample: saved | grads | scratch slots. The kept convolution inputs
// (keptIn) make it depend on the backend: each takes its kept length where the backend keeps it, and its float32
// form then goes to a scratch slot first.
type layout struct {
	per        []int // per tensor: elements per sample (the kept form's for a kept input)
	offs       []int // per tensor: the per-sample offset (reserved ids: −1)
	kept       []int // per keptIn: elements per sample of its kept form, 0 where it is saved as it is
	stageOff   []int // per keptIn: the per-sample offset of its float32 form when kept (its stage slot)
	perSample  int
	savedPer   int
	gradPer    int
	scratchPer int
}

// keptAlign: a kept input starts at a multiple of 16 elements per sample, so that its batch starts on a 64-byte
// boundary where the workspace does (a kernel's vector loads of it then need not straddle cache lines).
const keptAlign = 16

// layout lays the workspace out with the kept lengths that keptPer gives (KeptLen at N = 1; nil: nothing kept).
func (p *plan) layout(keptPer func(ops.ConvShape) int) layout {
	l := layout{per: make([]int, len(p.tensors)), offs: make([]int, len(p.tensors)), kept: make([]int, len(p.keeps)),
		stageOff: make([]int, len(p.keeps))}
	slots := append([]int(nil), p.slotPer...)
	for i, k := range p.keeps {
		if keptPer != nil {
			l.kept[i] = keptPer(k.conv)
		}
		if l.kept[i] > 0 {
			for len(slots) <= k.stage {
				slots = append(slots, 0)
			}
			slots[k.stage] = max(slots[k.stage], p.tensors[k.id].per)
		}
	}
	for i, t := range p.tensors {
		l.per[i] = t.per
		if t.keep > 0 && l.kept[t.keep-1] > 0 {
			l.per[i] = l.kept[t.keep-1]
		}
	}
	off := 0
	for _, k := range []int{kindSaved, kindGrad} {
		for i, t := range p.tensors {
			if i < numReserved {
				l.offs[i] = -1
				continue
			}
			if t.kind == k {
				if t.keep > 0 && l.kept[t.keep-1] > 0 {
					off = (off + keptAlign - 1) / keptAlign * keptAlign
				}
				l.offs[i] = off
				off += l.per[i]
			}
		}
		if k == kindSaved {
			l.savedPer = off
		} else {
			l.gradPer = off - l.savedPer
		}
	}
	slotOff := make([]int, len(slots))
	for s, per := range slots {
		slotOff[s] = off
		off += per
		l.scratchPer += per
	}
	for i, t := range p.tensors {
		if i >= numReserved && t.kind == kindScratch {
			l.offs[i] = slotOff[t.slot]
		}
	}
	for i, k := range p.keeps {
		if l.kept[i] > 0 {
			l.stageOff[i] = slotOff[k.stage]
		}
	}
	l.perSample = off
	return l
}

// addLayer appends l, which owns the parameters made since the previous layer was added.
func (p *plan) addLayer(l layer) {
	p.layers = append(p.layers, l)
	p.layerEnd = append(p.layerEnd, len(p.params))
}

// gradsReady is, per layer i, the offset from which the gradient buffer is final once Backward has run the layers
// i … end: everything at or above the end of the last parameter owned by a layer before i. (Each parameter is
// used by its own layer only, so its gradient is final after that layer's backward.)
func (p *plan) gradsReady() []int {
	ready := make([]int, len(p.layers))
	end := 0
	for i := range p.layers {
		ready[i] = end
		lo := 0
		if i > 0 {
			lo = p.layerEnd[i-1]
		}
		for _, t := range p.params[lo:p.layerEnd[i]] {
			end = max(end, t.Offset+t.Size)
		}
	}
	return ready
}

// block records a block of the summary: the parameters made since mark, and the stacked time projections of the
// block's resnets (made earlier, by tembProj).
func (p *plan) block(name string, mark int, out act) {
	n := p.numParams - mark
	for _, e := range p.tembs {
		if p.tproj != nil && strings.HasPrefix(e.name, name+".") {
			n += e.out*p.tembDim + e.out
		}
	}
	p.blocks = append(p.blocks, blockInfo{name: name, params: n, out: [3]int{out.c, out.h, out.w}})
}

func (p *plan) param(name string, init initSpec, shape ...int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	p.params = append(p.params, Param{Name: name, Shape: shape, Offset: p.numParams, Size: n})
	p.inits = append(p.inits, init)
	p.numParams += n
	return len(p.params) - 1
}

func (p *plan) conv(name string, cin, cout, k, stride, pad int) convP {
	fan := initSpec{initUniform, cin * k * k}
	c := convP{
		w:   p.param(name+".weight", fan, cout, cin, k, k),
		b:   p.param(name+".bias", fan, cout),
		cin: cin, cout: cout, k: k, str: stride, pad: pad,
	}
	p.convs = append(p.convs, c)
	return c
}

func (p *plan) linear(name string, in, out int) linP {
	fan := initSpec{initUniform, in}
	return linP{w: p.param(name+".weight", fan, out, in), b: p.param(name+".bias", fan, out), in: in, out: out}
}

func (p *plan) norm(name string, c int) normP {
	return normP{w: p.param(name+".weight", initSpec{kind: initOnes}, c), b: p.param(name+".bias", initSpec{kind: initZeros}, c), c: c}
}

func (p *plan) tensor(name string, per, kind, slot int) int {
	p.tensors = append(p.tensors, tensorSpec{name: name, per: per, kind: kind, slot: slot})
	if kind == kindScratch {
		for len(p.slotPer) <= slot {
			p.slotPer = append(p.slotPer, 0)
		}
		p.slotPer[slot] = max(p.slotPer[slot], per)
	}
	return len(p.tensors) - 1
}

func (p *plan) saved(name string, per int) int         { return p.tensor(name, per, kindSaved, 0) }
func (p *plan) grad(name string, per int) int          { return p.tensor(name, per, kindGrad, 0) }
func (p *plan) scratch(name string, slot, per int) int { return p.tensor(name, per, kindScratch, slot) }

// keptIn is a convolution's input that nothing but that convolution's backward reads again: a SiLU output (the
// group norm's backward recomputes it from the norm's input) or an upsampled activation. It is saved as it is, or,
// on a backend that keeps such inputs (ops.ConvInputKeeper: at bf16 on the CPU, NHWC bfloat16, half the bytes), as
// its kept form, its float32 form then written into scratch slot stage first (free in the forward pass: the
// backward's gradient slots; the kept form is what the backward reads).
type keptIn struct {
	id    int           // the saved tensor
	conv  ops.ConvShape // the convolution that reads it, at N = 1
	stage int           // the scratch slot of its float32 form when kept
	idx   int           // its index in plan.keeps
}

// stageSlot is keptIn's stage: slot 1 holds backward gradients only (resnets' act1/act2.grad, attention's), so it
// is free in the forward pass. (A resnet's act2 before its dropout, the dropout's input, goes to slot 2.)
const stageSlot = 1

// keep registers the saved tensor of a convolution input c (N = 1) that only c's backward reads again.
func (p *plan) keep(name string, c ops.ConvShape) keptIn {
	id := p.saved(name, c.Cin*c.H*c.W)
	k := keptIn{id: id, conv: c, stage: stageSlot, idx: len(p.keeps)}
	p.keeps = append(p.keeps, k)
	p.tensors[id].keep = len(p.keeps)
	return k
}

// act registers a module output: a saved value and its accumulated gradient.
func (p *plan) act(name string, c, h, w int) act {
	n := c * h * w
	return act{v: p.saved(name, n), g: p.grad(name+".grad", n), c: c, h: h, w: w}
}

// resnet adds a ResnetBlock2D from x to cout channels and returns its output.
func (p *plan) resnet(name string, x act, cout int) act {
	hw := x.hw()
	r := &resnetLayer{x: x, cout: cout, name: name}
	r.norm1 = p.norm(name+".norm1", x.c)
	r.conv1 = p.conv(name+".conv1", x.c, cout, 3, 1, 1)
	if p.listing { // first pass: list the projection (the layer stacking them takes its parameters)
		col := 0
		if k := len(p.tembs); k > 0 {
			col = p.tembs[k-1].col + p.tembs[k-1].out
		}
		p.tembs = append(p.tembs, tembEntry{name: name + ".time_emb_proj", out: cout, col: col})
	} else {
		e := p.tembs[p.tembNext]
		p.tembNext++
		if e.name != name+".time_emb_proj" || e.out != cout {
			panic(fmt.Sprintf("model: resnet %s (%d channels) meets stacked time projection %s (%d)", name, cout, e.name, e.out))
		}
		r.projCol = e.col
	}
	r.norm2 = p.norm(name+".norm2", cout)
	r.conv2 = p.conv(name+".conv2", cout, cout, 3, 1, 1)
	if x.c != cout {
		sc := p.conv(name+".conv_shortcut", x.c, cout, 1, 1, 0)
		r.short = &sc
		r.sc = p.scratch(name+".shortcut", 0, cout*hw)
	}
	r.st1 = p.saved(name+".norm1.stats", 2*p.groups)
	r.k1 = p.keep(name+".act1", r.conv1.shape(1, x.h, x.w))
	r.h = p.saved(name+".conv1+temb", cout*hw)
	r.st2 = p.saved(name+".norm2.stats", 2*p.groups)
	if p.dropout > 0 { // conv2 reads the dropout's output in training, act2 itself otherwise
		r.k2 = p.keep(name+".act2 (after dropout in training)", r.conv2.shape(1, x.h, x.w))
		r.pre = p.scratch(name+".act2 (before dropout)", 2, cout*hw) // read by the dropout alone
		r.dropBase = p.dropPer
		p.dropPer += cout * hw
		r.gd = p.scratch(name+".dropout.grad", 0, cout*hw)
	} else {
		r.k2 = p.keep(name+".act2", r.conv2.shape(1, x.h, x.w))
	}
	r.ga2 = p.scratch(name+".act2.grad", 1, cout*hw)
	r.gh = p.scratch(name+".conv1+temb.grad", 0, cout*hw)
	r.ga1 = p.scratch(name+".act1.grad", 1, x.c*hw)
	r.out = p.act(name, cout, x.h, x.w)
	r.proj = p.tproj // nil in the first pass
	p.addLayer(r)
	return r.out
}

// attention adds diffusers' Attention block (GroupNorm, q/k/v/out projections with
// biases, heads = channels/attention_head_dim, one head when it is 0, residual) over x.
func (p *plan) attention(name string, x act) act {
	c, L := x.c, x.hw()
	dh := p.cfg.HeadDim(c)
	a := &attnLayer{x: x, heads: c / dh, dh: dh}
	a.norm = p.norm(name+".group_norm", c)
	a.q = p.linear(name+".to_q", c, c)
	a.k = p.linear(name+".to_k", c, c)
	a.v = p.linear(name+".to_v", c, c)
	a.o = p.linear(name+".to_out.0", c, c)
	a.gn = p.scratch(name+".group_norm", 0, c*L)
	a.stats = p.saved(name+".group_norm.stats", 2*p.groups)
	a.gnT = p.saved(name+".group_norm.T", c*L)
	a.qv = p.saved(name+".q", c*L)
	a.kv = p.saved(name+".k", c*L)
	a.vv = p.saved(name+".v", c*L)
	a.ov = p.saved(name+".attn", c*L)
	a.pv = p.saved(name+".probs", a.heads*L*L)
	a.y = p.scratch(name+".to_out", 0, c*L)
	a.gy = p.scratch(name+".to_out.grad", 0, c*L)
	a.gov = p.scratch(name+".attn.grad", 1, c*L)
	a.gq = p.scratch(name+".q.grad", 2, c*L)
	a.gk = p.scratch(name+".k.grad", 3, c*L)
	a.gvv = p.scratch(name+".v.grad", 4, c*L)
	a.ggnT = p.scratch(name+".group_norm.T.grad", 0, c*L)
	a.ggn = p.scratch(name+".group_norm.grad", 1, c*L)
	a.out = p.act(name, c, x.h, x.w)
	p.addLayer(a)
	return a.out
}
