package model

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/cpu"
	"github.com/ddpmgo/ddpm/ops"
	"github.com/ddpmgo/ddpm/rng"
)

func celeba32(t testing.TB) (config.Model, int, int) {
	c := loadConfig(t, "celeba32.toml")
	return c.Model, c.Data.Channels, c.Data.ImageSize
}

// The seed recipe's model has 14,406,531 parameters (diffusers' UNet2DModel with
// block_out_channels (64, 128, 256), layers_per_block 2, DownBlock2D/UpBlock2D,
// 3 channels), the figure quoted with it.
func TestCountParamsCeleba32(t *testing.T) {
	cfg, in, size := celeba32(t)
	if got := CountParams(cfg, in); got != 14_406_531 {
		t.Fatalf("CountParams(celeba32) = %d, want 14,406,531", got)
	}
	u, err := New(cpu.New(), cfg, in, size, 1)
	if err != nil {
		t.Fatal(err)
	}
	sum := 0
	for _, p := range u.Table() {
		sum += p.Size
	}
	if sum != u.NumParams() || u.Params().Len() != sum || u.Grads().Len() != sum {
		t.Fatalf("table sums to %d, NumParams %d, buffers %d and %d", sum, u.NumParams(), u.Params().Len(), u.Grads().Len())
	}
}

// TestParamNamesCeleba32 spot-checks diffusers' state-dict keys and shapes, each
// derived by hand from the architecture (widths 64/128/256, temb 256; up block i
// concatenates its input with skips of the widths listed), checks that the table
// is contiguous with unique names, and that blocks that must not exist do not.
func TestParamNamesCeleba32(t *testing.T) {
	cfg, in, _ := celeba32(t)
	p, err := newPlan(cfg, in, 0)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Param{}
	off := 0
	for _, q := range p.params {
		if _, dup := byName[q.Name]; dup {
			t.Errorf("duplicate parameter %s", q.Name)
		}
		byName[q.Name] = q
		if q.Offset != off {
			t.Errorf("%s at offset %d, want %d (table not contiguous)", q.Name, q.Offset, off)
		}
		n := 1
		for _, d := range q.Shape {
			n *= d
		}
		if n != q.Size {
			t.Errorf("%s: shape %v has %d elements, Size %d", q.Name, q.Shape, n, q.Size)
		}
		off += q.Size
	}
	want := map[string][]int{
		"conv_in.weight":                               {64, 3, 3, 3},
		"conv_in.bias":                                 {64},
		"time_embedding.linear_1.weight":               {256, 64},
		"time_embedding.linear_2.weight":               {256, 256},
		"time_embedding.linear_2.bias":                 {256},
		"down_blocks.0.resnets.0.norm1.weight":         {64},
		"down_blocks.0.resnets.1.norm1.weight":         {64},
		"down_blocks.0.resnets.1.conv1.weight":         {64, 64, 3, 3},
		"down_blocks.0.resnets.1.time_emb_proj.weight": {64, 256},
		"down_blocks.0.downsamplers.0.conv.weight":     {64, 64, 3, 3},
		"down_blocks.1.resnets.0.conv1.weight":         {128, 64, 3, 3},
		"down_blocks.1.resnets.0.conv_shortcut.weight": {128, 64, 1, 1},
		"down_blocks.1.resnets.0.conv_shortcut.bias":   {128},
		"down_blocks.1.resnets.0.time_emb_proj.weight": {128, 256},
		"down_blocks.1.downsamplers.0.conv.weight":     {128, 128, 3, 3},
		"down_blocks.2.resnets.0.conv_shortcut.weight": {256, 128, 1, 1},
		"down_blocks.2.resnets.1.conv2.weight":         {256, 256, 3, 3},
		"mid_block.resnets.0.norm1.weight":             {256},
		"mid_block.attentions.0.group_norm.weight":     {256},
		"mid_block.attentions.0.group_norm.bias":       {256},
		"mid_block.attentions.0.to_q.weight":           {256, 256},
		"mid_block.attentions.0.to_k.bias":             {256},
		"mid_block.attentions.0.to_v.weight":           {256, 256},
		"mid_block.attentions.0.to_out.0.weight":       {256, 256},
		"mid_block.attentions.0.to_out.0.bias":         {256},
		"mid_block.resnets.1.conv2.weight":             {256, 256, 3, 3},
		"up_blocks.0.resnets.0.conv1.weight":           {256, 512, 3, 3}, // 256 + skip 256
		"up_blocks.0.resnets.0.conv_shortcut.weight":   {256, 512, 1, 1},
		"up_blocks.0.resnets.2.conv1.weight":           {256, 384, 3, 3}, // 256 + skip 128 (downsampler of level 1)
		"up_blocks.0.resnets.2.norm1.weight":           {384},
		"up_blocks.0.upsamplers.0.conv.weight":         {256, 256, 3, 3},
		"up_blocks.1.resnets.0.conv1.weight":           {128, 384, 3, 3}, // 256 + skip 128
		"up_blocks.1.resnets.1.conv_shortcut.weight":   {128, 256, 1, 1}, // 128 + skip 128
		"up_blocks.1.resnets.2.conv1.weight":           {128, 192, 3, 3}, // 128 + skip 64
		"up_blocks.1.upsamplers.0.conv.weight":         {128, 128, 3, 3},
		"up_blocks.2.resnets.0.conv1.weight":           {64, 192, 3, 3}, // 128 + skip 64
		"up_blocks.2.resnets.2.conv_shortcut.weight":   {64, 128, 1, 1}, // 64 + skip 64 (conv_in)
		"up_blocks.2.resnets.2.time_emb_proj.weight":   {64, 256},
		"conv_norm_out.weight":                         {64},
		"conv_norm_out.bias":                           {64},
		"conv_out.weight":                              {3, 64, 3, 3},
		"conv_out.bias":                                {3},
	}
	for name, shape := range want {
		q, ok := byName[name]
		if !ok {
			t.Errorf("missing %s", name)
		} else if !slices.Equal(q.Shape, shape) {
			t.Errorf("%s: shape %v, want %v", name, q.Shape, shape)
		}
	}
	for _, name := range []string{
		"down_blocks.2.downsamplers.0.conv.weight", // the last down block does not downsample
		"up_blocks.2.upsamplers.0.conv.weight",     // nor the last up block upsample
		"down_blocks.0.resnets.0.conv_shortcut.weight",
		"down_blocks.0.resnets.2.norm1.weight", // two resnets per down block
		"up_blocks.0.resnets.3.norm1.weight",   // three per up block
		"down_blocks.1.attentions.0.to_q.weight",
	} {
		if _, ok := byName[name]; ok {
			t.Errorf("unexpected parameter %s", name)
		}
	}
	// Count the module families by their keys.
	count := func(suffix string) (n int) {
		for name := range byName {
			if strings.HasSuffix(name, suffix) {
				n++
			}
		}
		return n
	}
	// 2+2+2 down resnets, 2 mid, 3+3+3 up: 17 resnets; shortcuts where widths change:
	// down 1.0, 2.0 and every up resnet (its input is a concatenation) = 2 + 9.
	if n := count(".time_emb_proj.weight"); n != 17 {
		t.Errorf("%d time_emb_proj weights, want 17 resnets", n)
	}
	if n := count(".conv_shortcut.weight"); n != 11 {
		t.Errorf("%d conv_shortcut weights, want 11", n)
	}
	if n := count(".to_q.weight"); n != 1 {
		t.Errorf("%d attention blocks, want 1 (middle only)", n)
	}
}

// Attention at a resolution adds AttnDownBlock2D/AttnUpBlock2D attentions after
// every resnet of the blocks working at that resolution, and nowhere else.
func TestAttentionResolutions(t *testing.T) {
	cfg := config.Model{BlockChannels: []int{32, 64, 64}, LayersPerBlock: 2, AttentionResolutions: []int{16},
		AttentionHeadDim: 8, NormGroups: 8, NormEps: 1e-5, FlipSinToCos: true, DownsamplePadding: 1}
	p, err := newPlan(cfg, 1, 32)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, q := range p.params {
		if strings.HasSuffix(q.Name, ".to_q.weight") {
			got = append(got, strings.TrimSuffix(q.Name, ".to_q.weight"))
		}
	}
	want := []string{ // level 1 (16×16): down block 1 and up block 1
		"down_blocks.1.attentions.0", "down_blocks.1.attentions.1",
		"up_blocks.1.attentions.0", "up_blocks.1.attentions.1", "up_blocks.1.attentions.2",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("attention blocks %v, want %v", got, want)
	}
	for _, bad := range []int{4, 5, 64} {
		cfg.AttentionResolutions = []int{bad}
		if _, err := New(cpu.New(), cfg, 1, 32, 1); err == nil || !strings.Contains(err.Error(), "resolution") {
			t.Errorf("attention resolution %d of a 32/16/8 U-Net: err %v, want an error naming the resolution", bad, err)
		}
	}
}

func TestNewRejectsBadShapes(t *testing.T) {
	good := config.Model{BlockChannels: []int{8, 16}, LayersPerBlock: 1, AttentionHeadDim: 4, NormGroups: 4, NormEps: 1e-5,
		FlipSinToCos: true, DownsamplePadding: 1}
	cases := []struct {
		name   string
		mutate func(*config.Model)
		size   int
		want   string
	}{
		{"groups", func(m *config.Model) { m.NormGroups = 3 }, 8, "norm_groups"},
		{"size", func(m *config.Model) {}, 9, "divisible"},
		{"heads", func(m *config.Model) { m.MidAttention = true; m.AttentionHeadDim = 5 }, 8, "attention_head_dim"},
		{"empty", func(m *config.Model) { m.BlockChannels = nil }, 8, "block_channels"},
		{"downsample padding", func(m *config.Model) { m.DownsamplePadding = 2 }, 8, "downsample_padding"},
		{"freq shift", func(m *config.Model) { m.FreqShift = 4 }, 8, "freq_shift"}, // half of the 8-wide embedding
		{"head dim", func(m *config.Model) { m.AttentionHeadDim = -1 }, 8, "attention_head_dim"},
		{"down attention", func(m *config.Model) { m.DownAttentionResolutions = []int{2} }, 8, "resolution 2"},
		{"up attention heads", func(m *config.Model) { m.UpAttentionResolutions = []int{4}; m.AttentionHeadDim = 3 }, 8, "attention_head_dim"},
	}
	for _, c := range cases {
		m := good
		m.BlockChannels = slices.Clone(good.BlockChannels)
		c.mutate(&m)
		if _, err := New(cpu.New(), m, 1, c.size, 1); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want one mentioning %q", c.name, err, c.want)
		}
	}
	if _, err := New(cpu.New(), good, 1, 8, 0); err == nil {
		t.Error("max batch 0 accepted")
	}
}

// TestInit checks PyTorch's default initialisation drawn from the project RNG:
// GroupNorm weight 1 and bias 0; conv/linear weight and bias
// (2u−1)/√fan_in with u = rng.Uniform(seed, StreamInit, flat index) and fan_in the
// product of the weight's shape after the first axis (the bias takes its weight's).
func TestInit(t *testing.T) {
	cfg, in, size := gradCheckConfig()
	be := cpu.New()
	u, err := New(be, cfg, in, size, 1)
	if err != nil {
		t.Fatal(err)
	}
	u.Init(42)
	got := read(u.Params())
	fanIn := 0
	for _, p := range u.Table() {
		vals := got[p.Offset : p.Offset+p.Size]
		isNorm := strings.Contains(p.Name, "norm")
		if strings.HasSuffix(p.Name, ".weight") && !isNorm {
			fanIn = p.Size / p.Shape[0]
		}
		for j, v := range vals {
			var want float64
			switch {
			case isNorm && strings.HasSuffix(p.Name, ".weight"):
				want = 1
			case isNorm:
				want = 0
			default:
				uu := float64(rng.Uniform(42, rng.StreamInit, uint64(p.Offset+j)))
				want = (2*uu - 1) / math.Sqrt(float64(fanIn))
			}
			if math.Abs(v-want) > 1e-6*math.Abs(want)+1e-9 {
				t.Fatalf("%s[%d] = %g, want %g", p.Name, j, v, want)
			}
		}
		// A large uniform tensor spreads over its whole range: std ≈ bound/√3.
		if !isNorm && p.Size >= 2000 {
			var s2 float64
			for _, v := range vals {
				s2 += v * v
			}
			std, bound := math.Sqrt(s2/float64(p.Size)), 1/math.Sqrt(float64(fanIn))
			if math.Abs(std*math.Sqrt(3)/bound-1) > 0.05 {
				t.Errorf("%s: std %.4g, want ≈ %.4g", p.Name, std, bound/math.Sqrt(3))
			}
		}
	}
	u2, _ := New(be, cfg, in, size, 1)
	u2.Init(42)
	if !slices.Equal(read(u2.Params()), got) {
		t.Error("Init(42) is not reproducible")
	}
	u2.Init(43)
	if slices.Equal(read(u2.Params()), got) {
		t.Error("Init(43) equals Init(42)")
	}
}

// ForwardFLOPs counts ~4.10 GFLOP per 32×32 image for celeba32 (the figure of the
// seed recipe: 2 per multiply-add of every conv, linear and attention product), and
// scales linearly with the batch.
func TestForwardFLOPsCeleba32(t *testing.T) {
	cfg, in, size := celeba32(t)
	u, err := New(cpu.New(), cfg, in, size, 1)
	if err != nil {
		t.Fatal(err)
	}
	f := u.ForwardFLOPs(1)
	if f < 4.09e9 || f > 4.11e9 {
		t.Fatalf("ForwardFLOPs(1) = %.4g, want ≈ 4.10e9", float64(f))
	}
	if u.ForwardFLOPs(64) != 64*f {
		t.Fatalf("ForwardFLOPs(64) = %d, want 64 × %d", u.ForwardFLOPs(64), f)
	}
}

func TestSummary(t *testing.T) {
	cfg, in, size := celeba32(t)
	table, params, bytes := Summary(cfg, in, size, 64)
	if params != CountParams(cfg, in) {
		t.Errorf("Summary params %d, CountParams %d", params, CountParams(cfg, in))
	}
	for _, want := range []string{"conv_in", "time_embedding", "down_blocks.2", "mid_block", "up_blocks.0",
		"conv_out", "14,406,531", "[64, 256, 8, 8]", "[64, 3, 32, 32]", "MiB"} {
		if !strings.Contains(table, want) {
			t.Errorf("summary lacks %q:\n%s", want, table)
		}
	}
	// The block rows add up to the total.
	p, _ := newPlan(cfg, in, size)
	sum := 0
	for _, b := range p.blocks {
		sum += b.params
	}
	if sum != params {
		t.Errorf("block parameters sum to %d, total %d", sum, params)
	}
	// Memory: 5 float32 copies of the parameters plus a workspace linear in the batch,
	// equal to what New allocates.
	_, _, b1 := Summary(cfg, in, size, 1)
	_, _, b2 := Summary(cfg, in, size, 2)
	ws := b2 - b1
	if ws <= 0 || b1-ws != 5*4*int64(params) || bytes != b1+63*ws {
		t.Errorf("bytes at batch 1, 2, 64: %d, %d, %d; want 5·4·%d + batch × workspace", b1, b2, bytes, params)
	}
	tiny, tin, tsize := gradCheckConfig()
	u, err := New(cpu.New(), tiny, tin, tsize, 3)
	if err != nil {
		t.Fatal(err)
	}
	_, tp, tb := Summary(tiny, tin, tsize, 3)
	if want := int64(5*4*tp) + 4*int64(u.WorkspaceElems()); tb != want {
		t.Errorf("tiny summary bytes %d, New allocates %d", tb, want)
	}
	if s, n, b := Summary(config.Model{}, 3, 32, 1); n != 0 || b != 0 || !strings.Contains(s, "block_channels") {
		t.Errorf("Summary of an empty model: %q %d %d", s, n, b)
	}
}

// Dropout: in train mode a fixed (seed, step) gives a fixed mask; another step
// another mask; eval mode turns it off and equals the same weights without dropout.
func TestDropoutModes(t *testing.T) {
	cfg, in, size := gradCheckConfig()
	cfg.Dropout = 0.3
	be := cpu.New()
	const batch = 2
	u, err := New(be, cfg, in, size, batch)
	if err != nil {
		t.Fatal(err)
	}
	u.Init(1)
	x := upload(be, ramp(batch*in*size*size))
	ts := upload(be, []float32{5, 500})
	run := func(train bool, step uint64) []float64 {
		u.SetTrain(train, 11, step)
		return read(u.Forward(x, ts, batch))
	}
	a, a2, b := run(true, 1), run(true, 1), run(true, 2)
	e, e2 := run(false, 1), run(false, 2)
	if !slices.Equal(a, a2) {
		t.Error("same dropout seed and step gave different outputs")
	}
	if slices.Equal(a, b) {
		t.Error("different steps gave the same dropout masks")
	}
	if slices.Equal(a, e) {
		t.Error("train and eval outputs are equal: dropout not applied")
	}
	if !slices.Equal(e, e2) {
		t.Error("eval output depends on the step")
	}
	cfg.Dropout = 0
	v, _ := New(be, cfg, in, size, batch)
	be.Copy(v.Params(), u.Params())
	v.SetTrain(true, 11, 1)
	if !slices.Equal(read(v.Forward(x, ts, batch)), e) {
		t.Error("eval mode differs from the same weights without dropout")
	}
}

// The batch may change between calls (up to maxBatch): each sample's output does
// not depend on the batch it is computed in.
func TestBatchSizes(t *testing.T) {
	cfg, in, size := gradCheckConfig()
	cfg.Dropout = 0
	be := cpu.New64()
	u, err := New(be, cfg, in, size, 3)
	if err != nil {
		t.Fatal(err)
	}
	u.Init(5)
	per := in * size * size
	xs := ramp(3 * per)
	full := read(u.Forward(upload(be, xs), upload(be, []float32{1, 2, 3}), 3))
	for i := 0; i < 3; i++ {
		one := read(u.Forward(upload(be, xs[i*per:(i+1)*per]), upload(be, []float32{float32(i + 1)}), 1))
		for j, v := range one {
			if math.Abs(v-full[i*per+j]) > 1e-12 {
				t.Fatalf("sample %d alone differs from its batch-3 result at %d: %g vs %g", i, j, v, full[i*per+j])
			}
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("Forward with batch > maxBatch did not panic")
		}
	}()
	u.Forward(upload(be, ramp(4*per)), upload(be, make([]float32, 4)), 4)
}

func ramp(n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(math.Sin(float64(i) * 0.37))
	}
	return v
}

// nopBackend implements ops.Backend with no arithmetic and no allocation after
// Alloc/Slice, so that AllocsPerRun over it measures the model's own allocations.
type nopBackend struct{ ops.Backend }

type nopBuf struct{ n int }

func (b *nopBuf) Len() int { return b.n }

func (nopBackend) Name() string                                             { return "nop" }
func (nopBackend) Alloc(n int) ops.Buf                                      { return &nopBuf{n} }
func (nopBackend) Slice(b ops.Buf, off, n int) ops.Buf                      { return &nopBuf{n} }
func (nopBackend) Upload(ops.Buf, []float32)                                {}
func (nopBackend) Fill(ops.Buf, float32)                                    {}
func (nopBackend) Copy(ops.Buf, ops.Buf)                                    {}
func (nopBackend) Add(a, b, y ops.Buf)                                      {}
func (nopBackend) Axpy(float32, ops.Buf, ops.Buf)                           {}
func (nopBackend) SiLU(x, y ops.Buf)                                        {}
func (nopBackend) SiLUBackward(x, dy, dx ops.Buf)                           {}
func (nopBackend) Conv2D(ops.ConvShape, ops.Buf, ops.Buf, ops.Buf, ops.Buf) {}
func (nopBackend) Conv2DBackward(ops.ConvShape, ops.Buf, ops.Buf, ops.Buf, ops.Buf, ops.Buf, ops.Buf) {
}
func (nopBackend) GroupNorm(ops.NormShape, ops.Buf, ops.Buf, ops.Buf, ops.Buf, ops.Buf) {}
func (nopBackend) GroupNormBackward(ops.NormShape, ops.Buf, ops.Buf, ops.Buf, ops.Buf, ops.Buf, ops.Buf, ops.Buf) {
}
func (nopBackend) GroupNormSiLU(ops.NormShape, ops.Buf, ops.Buf, ops.Buf, ops.Buf, ops.Buf) {}
func (nopBackend) GroupNormSiLUBackward(ops.NormShape, ops.Buf, ops.Buf, ops.Buf, ops.Buf, ops.Buf, ops.Buf, ops.Buf, ops.Buf) {
}
func (nopBackend) Linear(int, int, int, ops.Buf, ops.Buf, ops.Buf, ops.Buf) {}
func (nopBackend) LinearBackward(int, int, int, ops.Buf, ops.Buf, ops.Buf, ops.Buf, ops.Buf, ops.Buf) {
}
func (nopBackend) TimestepEmbedding(ops.EmbedShape, ops.Buf, ops.Buf)           {}
func (nopBackend) Upsample2x(int, int, int, ops.Buf, ops.Buf)                   {}
func (nopBackend) Upsample2xBackward(int, int, int, ops.Buf, ops.Buf)           {}
func (nopBackend) Concat(int, int, int, int, ops.Buf, ops.Buf, ops.Buf)         {}
func (nopBackend) ConcatBackward(int, int, int, int, ops.Buf, ops.Buf, ops.Buf) {}
func (nopBackend) AddChannel(int, int, int, int, ops.Buf, ops.Buf, ops.Buf)     {}
func (nopBackend) ChannelSum(int, int, int, int, ops.Buf, ops.Buf)              {}
func (nopBackend) Transpose(int, int, int, ops.Buf, ops.Buf)                    {}
func (nopBackend) TransposeBackward(int, int, int, ops.Buf, ops.Buf)            {}
func (nopBackend) Attention(ops.AttnShape, ops.Buf, ops.Buf, ops.Buf, ops.Buf, ops.Buf) {
}
func (nopBackend) AttentionBackward(ops.AttnShape, ops.Buf, ops.Buf, ops.Buf, ops.Buf, ops.Buf, ops.Buf, ops.Buf, ops.Buf) {
}
func (nopBackend) Dropout(float32, uint64, uint64, ops.Buf, ops.Buf)         {}
func (nopBackend) DropoutBackward(float32, uint64, uint64, ops.Buf, ops.Buf) {}

// TestStepAllocatesNothing: after the first step at a batch size, Forward and
// Backward allocate nothing of their own (the backend is a no-op here; the
// benchmark reports the CPU backend's allocations as allocs/op).
func TestStepAllocatesNothing(t *testing.T) {
	cfg, in, size := celeba32(t)
	cfg.Dropout = 0.1
	cfg.AttentionResolutions = []int{16}
	be := nopBackend{}
	u, err := New(be, cfg, in, size, 8)
	if err != nil {
		t.Fatal(err)
	}
	x, ts, dout := be.Alloc(8*in*size*size), be.Alloc(8), be.Alloc(8*in*size*size)
	u.SetTrain(true, 1, 0)
	step := func() {
		u.Forward(x, ts, 8)
		u.Backward(dout)
	}
	step()
	if a := testing.AllocsPerRun(5, step); a != 0 {
		t.Fatalf("a steady-state step allocates %v times", a)
	}
	// A new batch size makes its views once; switching back costs nothing.
	u.Forward(x, ts, 4)
	if a := testing.AllocsPerRun(5, step); a != 0 {
		t.Fatalf("after a batch-size change, a step allocates %v times", a)
	}
}

func TestBackwardWithoutForwardPanics(t *testing.T) {
	cfg, in, size := gradCheckConfig()
	u, err := New(cpu.New(), cfg, in, size, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "Forward") {
			t.Errorf("recover() = %v, want a panic naming Forward", r)
		}
	}()
	u.Backward(cpu.New().Alloc(in * size * size))
}

// UseParams switches the weights the model reads (e.g. to the EMA copy) and back.
func TestUseParams(t *testing.T) {
	cfg, in, size := gradCheckConfig()
	be := cpu.New()
	u, err := New(be, cfg, in, size, 1)
	if err != nil {
		t.Fatal(err)
	}
	u.Init(1)
	u.SetTrain(false, 0, 0)
	x, ts := upload(be, ramp(in*size*size)), upload(be, []float32{10})
	base := read(u.Forward(x, ts, 1))

	other := be.Alloc(u.NumParams())
	be.Copy(other, u.Params())
	be.Scale(0.5, other)
	prev := u.UseParams(other)
	if u.Params() != other || prev == other {
		t.Fatal("UseParams did not switch Params()")
	}
	half := read(u.Forward(x, ts, 1))
	if slices.Equal(half, base) {
		t.Fatal("output unchanged after UseParams with halved weights")
	}
	v, _ := New(be, cfg, in, size, 1)
	be.Copy(v.Params(), other)
	if !slices.Equal(read(v.Forward(x, ts, 1)), half) {
		t.Fatal("UseParams(w) differs from a model whose own weights are w")
	}
	u.UseParams(prev)
	if !slices.Equal(read(u.Forward(x, ts, 1)), base) {
		t.Fatal("switching back does not restore the output")
	}
}

// TestShardDropoutAndGradients: a batch split into shards (SetShard) draws the dropout masks of the whole batch, so
// each shard's outputs are the batch's and the shards' weight gradients add up to the batch's (float64, where the
// sums agree to rounding).
func TestShardDropoutAndGradients(t *testing.T) {
	cfg, in, size := gradCheckConfig()
	cfg.Dropout = 0.3
	be := cpu.New64()
	const B = 4
	per := in * size * size
	xs, ts := ramp(B*per), []float32{5, 40, 300, 900}
	dout := ramp(B * per)
	u, err := New(be, cfg, in, size, B)
	if err != nil {
		t.Fatal(err)
	}
	u.Init(3)
	u.SetTrain(true, 11, 7)
	full := read(u.Forward(upload(be, xs), upload(be, ts), B))
	u.Backward(upload(be, dout))
	gFull := read(u.Grads())

	gSum := make([]float64, len(gFull))
	for _, sh := range [][2]int{{0, 1}, {1, 3}} { // samples [0,1) and [1,4)
		first, n := sh[0], sh[1]
		if first == 1 {
			n = 3
		}
		v, err := New(be, cfg, in, size, n)
		if err != nil {
			t.Fatal(err)
		}
		be.Copy(v.Params(), u.Params())
		v.SetShard(B, first)
		v.SetTrain(true, 11, 7)
		out := read(v.Forward(upload(be, xs[first*per:(first+n)*per]), upload(be, ts[first:first+n]), n))
		for j, y := range out {
			if math.Abs(y-full[first*per+j]) > 1e-12 {
				t.Fatalf("shard at %d: output %d = %g, the whole batch's %g (dropout masks differ?)", first, j, y, full[first*per+j])
			}
		}
		v.Backward(upload(be, dout[first*per:(first+n)*per]))
		for i, g := range read(v.Grads()) {
			gSum[i] += g
		}
	}
	for i := range gFull {
		if math.Abs(gSum[i]-gFull[i]) > 1e-9*(1+math.Abs(gFull[i])) {
			t.Fatalf("gradient %d: shards sum to %g, the whole batch %g", i, gSum[i], gFull[i])
		}
	}
}

// TestOnGradsReady: during Backward the hook reports decreasing offsets down to 0, and what it reports as final is
// final: Grads()[from:] at the call equals the end result.
func TestOnGradsReady(t *testing.T) {
	cfg, in, size := gradCheckConfig()
	be := cpu.New64()
	u, err := New(be, cfg, in, size, 2)
	if err != nil {
		t.Fatal(err)
	}
	u.Init(3)
	type snap struct {
		from int
		g    []float64
	}
	var snaps []snap
	u.OnGradsReady(func(from int) { snaps = append(snaps, snap{from, read(u.Grads())}) })
	u.Forward(upload(be, ramp(2*in*size*size)), upload(be, []float32{3, 70}), 2)
	u.Backward(upload(be, ramp(2*in*size*size)))
	final := read(u.Grads())
	if len(snaps) < 3 || snaps[len(snaps)-1].from != 0 {
		t.Fatalf("hook calls: %d, last from %d; want several, the last at 0", len(snaps), snaps[len(snaps)-1].from)
	}
	prev := u.NumParams()
	for _, s := range snaps {
		if s.from >= prev {
			t.Fatalf("from %d after %d: not decreasing", s.from, prev)
		}
		prev = s.from
		for i := s.from; i < len(final); i++ {
			if s.g[i] != final[i] {
				t.Fatalf("at from = %d, gradient %d was %g, finally %g", s.from, i, s.g[i], final[i])
			}
		}
	}
}
