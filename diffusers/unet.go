package diffusers

import (
	"fmt"
	"math"
	"slices"

	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/model"
)

// Version is the _diffusers_version written into the configs: a diffusers release whose UNet2DModel and
// DDPMScheduler take every key written here. diffusers reads it for logging only; keys a release does not know it
// ignores with a warning, keys it misses it fills with its defaults.
const Version = "0.27.2"

// UNet is what a UNet2DModel config.json says, in this trainer's terms: the [model] section and the images it takes
// (in_channels = out_channels, sample_size).
type UNet struct {
	Model      config.Model
	InChannels int
	SampleSize int
}

// Block types of UNet2DModel that this trainer builds.
const (
	downBlock     = "DownBlock2D"
	attnDownBlock = "AttnDownBlock2D"
	upBlock       = "UpBlock2D"
	attnUpBlock   = "AttnUpBlock2D"
	midBlock      = "UNetMidBlock2D"
)

// EncodeUNet writes the config.json of UNet2DModel for the U-Net of m on inChannels×imageSize² images: every
// argument of UNet2DModel.__init__, with the values that build this very model (diffusers' defaults where this
// trainer has no choice: positional time embedding, SiLU, conv down- and upsampling, the "default" time scale
// shift, no class embedding).
func EncodeUNet(m config.Model, inChannels, imageSize int) ([]byte, error) {
	if err := model.Check(m, inChannels, imageSize); err != nil {
		return nil, fmt.Errorf("diffusers: %w", err)
	}
	L := len(m.BlockChannels)
	down, up := make([]string, L), make([]string, L)
	for l := 0; l < L; l++ {
		down[l] = downBlock
		if m.DownAttention(imageSize, l) {
			down[l] = attnDownBlock
		}
		up[L-1-l] = upBlock // up block i works at level L−1−i
		if m.UpAttention(imageSize, l) {
			up[L-1-l] = attnUpBlock
		}
	}
	var head any // null: one head per block
	if m.AttentionHeadDim > 0 {
		head = m.AttentionHeadDim
	}
	var shift any = pyFloat(m.FreqShift)
	if m.FreqShift == math.Trunc(m.FreqShift) && math.Abs(m.FreqShift) < 1<<53 {
		shift = int(m.FreqShift) // diffusers declares freq_shift an int
	}
	return encode(map[string]any{
		"_class_name":             "UNet2DModel",
		"_diffusers_version":      Version,
		"sample_size":             imageSize,
		"in_channels":             inChannels,
		"out_channels":            inChannels,
		"center_input_sample":     false,
		"time_embedding_type":     "positional",
		"freq_shift":              shift,
		"flip_sin_to_cos":         m.FlipSinToCos,
		"down_block_types":        down,
		"up_block_types":          up,
		"block_out_channels":      m.BlockChannels,
		"layers_per_block":        m.LayersPerBlock,
		"mid_block_scale_factor":  pyFloat(1),
		"downsample_padding":      m.DownsamplePadding,
		"downsample_type":         "conv",
		"upsample_type":           "conv",
		"dropout":                 pyFloat(m.Dropout),
		"act_fn":                  "silu",
		"attention_head_dim":      head,
		"norm_num_groups":         m.NormGroups,
		"attn_norm_num_groups":    nil,
		"norm_eps":                pyFloat(m.NormEps),
		"resnet_time_scale_shift": "default",
		"add_attention":           m.MidAttention,
		"class_embed_type":        nil,
		"num_class_embeds":        nil,
		"num_train_timesteps":     nil,
	})
}

// unetKeys lists the UNet2DModel arguments ParseUNet reads (for the unknown-key message).
const unetKeys = "sample_size, in_channels, out_channels, center_input_sample, time_embedding_type, freq_shift, " +
	"flip_sin_to_cos, down_block_types, mid_block_type, up_block_types, block_out_channels, layers_per_block, " +
	"mid_block_scale_factor, downsample_padding, downsample_type, upsample_type, dropout, act_fn, attention_head_dim, " +
	"norm_num_groups, attn_norm_num_groups, norm_eps, resnet_time_scale_shift, add_attention, class_embed_type, " +
	"num_class_embeds, num_train_timesteps"

// ParseUNet reads a UNet2DModel config.json (file names it in errors). A key the file leaves out takes diffusers'
// default, as UNet2DModel.from_config does. It accepts exactly the models this trainer builds: DownBlock2D /
// AttnDownBlock2D / UpBlock2D / AttnUpBlock2D blocks in any number and order, UNetMidBlock2D with or without
// attention, any freq_shift below half the embedding width, either flip_sin_to_cos, downsample_padding 0 or 1, any
// norm_eps, attention_head_dim null or an integer, any layers_per_block, dropout and norm_num_groups that divide the
// widths. Every other value (another block type, a "fourier" time embedding, class embeddings, the "scale_shift" time
// norm, another activation, …) and every unknown key is refused with an error naming the key, its value and what is
// supported.
func ParseUNet(file string, data []byte) (UNet, error) {
	o, err := decodeObject(file, data)
	if err != nil {
		return UNet{}, err
	}
	if _, err := o.str("_class_name", "UNet2DModel", "UNet2DModel"); err != nil {
		return UNet{}, err
	}
	var u UNet
	m := &u.Model
	pos := func(i int) bool { return i > 0 }
	// sample_size: an int, or [h, w] with h = w (the trainer's images are square).
	switch v := o.get("sample_size", nil).(type) {
	case []any:
		h, okH := 0, false
		if len(v) == 2 {
			h, okH = asInt(v[0])
			w, okW := asInt(v[1])
			okH = okH && okW && h == w && h > 0
		}
		if !okH {
			return UNet{}, o.refuse("sample_size", v, "a positive integer, or [s, s]: square images")
		}
		u.SampleSize = h
	default:
		s, ok := asInt(v)
		if !ok || s <= 0 {
			return UNet{}, o.refuse("sample_size", v, "a positive integer (the image side; null leaves the image size unknown)")
		}
		u.SampleSize = s
	}
	if u.InChannels, err = o.integer("in_channels", 3, "1 or 3 (gray or RGB images)", func(i int) bool { return i == 1 || i == 3 }); err != nil {
		return UNet{}, err
	}
	if _, err = o.integer("out_channels", 3, fmt.Sprintf("%d, the same as in_channels (a noise prediction)", u.InChannels),
		func(i int) bool { return i == u.InChannels }); err != nil {
		return UNet{}, err
	}
	if cis, err := o.boolean("center_input_sample", false); err != nil || cis {
		return UNet{}, o.refuse("center_input_sample", o.m["center_input_sample"], "false")
	}
	if _, err = o.str("time_embedding_type", "positional", "positional"); err != nil {
		return UNet{}, err
	}
	if m.FlipSinToCos, err = o.boolean("flip_sin_to_cos", true); err != nil {
		return UNet{}, err
	}
	defDown := []any{downBlock, attnDownBlock, attnDownBlock, attnDownBlock}
	defUp := []any{attnUpBlock, attnUpBlock, attnUpBlock, upBlock}
	down, err := o.strList("down_block_types", defDown, downBlock, attnDownBlock)
	if err != nil {
		return UNet{}, err
	}
	up, err := o.strList("up_block_types", defUp, upBlock, attnUpBlock)
	if err != nil {
		return UNet{}, err
	}
	if _, err = o.str("mid_block_type", midBlock, midBlock); err != nil {
		return UNet{}, err
	}
	chv := o.get("block_out_channels", []any{jsonInt(224), jsonInt(448), jsonInt(672), jsonInt(896)})
	chl, ok := chv.([]any)
	if ok && len(chl) > 0 {
		for _, c := range chl {
			i, isInt := asInt(c)
			if !isInt || i <= 0 {
				ok = false
				break
			}
			m.BlockChannels = append(m.BlockChannels, i)
		}
	}
	if !ok || len(chl) == 0 {
		return UNet{}, o.refuse("block_out_channels", chv, "a non-empty list of positive widths")
	}
	L := len(m.BlockChannels)
	if len(down) != L || len(up) != L {
		return UNet{}, fmt.Errorf("%s: down_block_types (%d), up_block_types (%d) and block_out_channels (%d) must have the same length",
			file, len(down), len(up), L)
	}
	if m.LayersPerBlock, err = o.integer("layers_per_block", 2, "an integer ≥ 1", pos); err != nil {
		return UNet{}, err
	}
	if _, err = o.number("mid_block_scale_factor", jsonInt(1), "1", func(f float64) bool { return f == 1 }); err != nil {
		return UNet{}, err
	}
	if m.DownsamplePadding, err = o.integer("downsample_padding", 1, "0 or 1", func(i int) bool { return i == 0 || i == 1 }); err != nil {
		return UNet{}, err
	}
	if _, err = o.str("downsample_type", "conv", "conv"); err != nil {
		return UNet{}, err
	}
	if _, err = o.str("upsample_type", "conv", "conv"); err != nil {
		return UNet{}, err
	}
	if m.Dropout, err = o.number("dropout", jsonInt(0), "0 ≤ dropout < 1", func(f float64) bool { return f >= 0 && f < 1 }); err != nil {
		return UNet{}, err
	}
	if _, err = o.str("act_fn", "silu", "silu", "swish"); err != nil {
		return UNet{}, err
	}
	if m.NormGroups, err = o.integer("norm_num_groups", 32, "a positive integer dividing every block width", func(g int) bool {
		for _, c := range m.BlockChannels {
			if g <= 0 || c%g != 0 {
				return false
			}
		}
		return true
	}); err != nil {
		return UNet{}, err
	}
	if v := o.get("attn_norm_num_groups", nil); v != nil {
		if g, ok := asInt(v); !ok || g != m.NormGroups {
			return UNet{}, o.refuse("attn_norm_num_groups", v, fmt.Sprintf("null, or norm_num_groups (%d)", m.NormGroups))
		}
	}
	switch v := o.get("attention_head_dim", jsonInt(8)); v {
	case nil:
		m.AttentionHeadDim = 0 // one head per block
	default:
		d, ok := asInt(v)
		if !ok || d <= 0 {
			return UNet{}, o.refuse("attention_head_dim", v, "null (one head per block) or a positive integer")
		}
		m.AttentionHeadDim = d
	}
	if m.NormEps, err = o.number("norm_eps", jsonFloat(1e-5), "a number > 0", func(f float64) bool { return f > 0 }); err != nil {
		return UNet{}, err
	}
	if _, err = o.str("resnet_time_scale_shift", "default", "default"); err != nil {
		return UNet{}, err
	}
	if m.MidAttention, err = o.boolean("add_attention", true); err != nil {
		return UNet{}, err
	}
	if err = o.null("class_embed_type", "no class embedding"); err != nil {
		return UNet{}, err
	}
	if err = o.null("num_class_embeds", "no class embedding"); err != nil {
		return UNet{}, err
	}
	if v := o.get("num_train_timesteps", nil); v != nil { // used by the "learned" time embedding only
		if i, ok := asInt(v); !ok || i <= 0 {
			return UNet{}, o.refuse("num_train_timesteps", v, "null or a positive integer (unused by the positional embedding)")
		}
	}
	half := m.BlockChannels[0] / 2
	if m.FreqShift, err = o.number("freq_shift", jsonInt(0), fmt.Sprintf("a number < block_out_channels[0]/2 = %d", half),
		func(f float64) bool { return float64(half)-f > 0 }); err != nil {
		return UNet{}, err
	}
	if err := o.unknown(unetKeys); err != nil {
		return UNet{}, err
	}

	// Attention by level: down block l works at level l, up block i at level L−1−i.
	m.AttentionResolutions, m.DownAttentionResolutions, m.UpAttentionResolutions = []int{}, []int{}, []int{}
	for l := 0; l < L; l++ {
		r := u.SampleSize >> l
		d, up := down[l] == attnDownBlock, up[L-1-l] == attnUpBlock
		switch {
		case d && up:
			m.AttentionResolutions = append(m.AttentionResolutions, r)
		case d:
			m.DownAttentionResolutions = append(m.DownAttentionResolutions, r)
		case up:
			m.UpAttentionResolutions = append(m.UpAttentionResolutions, r)
		}
	}
	if err := model.Check(*m, u.InChannels, u.SampleSize); err != nil {
		return UNet{}, fmt.Errorf("%s: %w", file, err)
	}
	if f := 1 << (L - 1); u.SampleSize%f != 0 || u.SampleSize < 4 {
		return UNet{}, fmt.Errorf("%s: sample_size %d must be at least 4 and divisible by 2^(len(block_out_channels)−1) = %d", file, u.SampleSize, f)
	}
	return u, nil
}

// strList reads a list of strings, each one of allowed.
func (o *object) strList(key string, def []any, allowed ...string) ([]string, error) {
	v := o.get(key, def)
	l, ok := v.([]any)
	var out []string
	for _, x := range l {
		s, isStr := x.(string)
		if !isStr || !slices.Contains(allowed, s) {
			return nil, fmt.Errorf("%s: %s = %s: block type %s is not supported (supported: %s)", o.file, key, show(v), show(x), quoteAll(allowed))
		}
		out = append(out, s)
	}
	if !ok {
		return nil, o.refuse(key, v, "a list of "+quoteAll(allowed))
	}
	return out, nil
}
