package model

import "github.com/ddpmgo/ddpm/ops"

// layer is one module of the U-Net's sequence. forward reads its input activations
// and overwrites its outputs; backward reads the gradient of its output and
// accumulates into the gradients of its inputs and of its parameters (ops'
// convention), using scratch slots it zeroes itself.
type layer interface {
	forward(u *UNet)
	backward(u *UNet)
	flops(n int) int64 // forward FLOPs at batch n
}

func (c convP) shape(n, h, w int) ops.ConvShape {
	return ops.ConvShape{N: n, Cin: c.cin, H: h, W: w, Cout: c.cout, K: c.k, Stride: c.str, Pad: c.pad, PadEnd: c.padEnd}
}

func (u *UNet) normShape(c, hw int) ops.NormShape {
	return ops.NormShape{N: u.n, C: c, HW: hw, G: u.p.groups, Eps: u.p.eps}
}

// zero returns tensor id's view filled with 0, ready to accumulate into.
func (u *UNet) zero(id int) ops.Buf {
	b := u.buf(id)
	u.be.Fill(b, 0)
	return b
}

func linFLOPs(n, in, out int) int64 { return 2 * int64(n) * int64(in) * int64(out) }

// convLayer is a bare convolution: conv_in and Downsample2D (3×3, stride 2, pad 1, or
// pad (0, 1, 0, 1) with downsample_padding 0).
type convLayer struct {
	x, out act
	p      convP
}

func (l *convLayer) forward(u *UNet) {
	u.be.Conv2D(l.p.shape(u.n, l.x.h, l.x.w), u.buf(l.x.v), u.pv[l.p.w], u.pv[l.p.b], u.buf(l.out.v))
}

func (l *convLayer) backward(u *UNet) {
	u.be.Conv2DBackward(l.p.shape(u.n, l.x.h, l.x.w), u.buf(l.x.v), u.pv[l.p.w], u.buf(l.out.g),
		u.buf(l.x.g), u.gv[l.p.w], u.gv[l.p.b])
}

func (l *convLayer) flops(n int) int64 { return l.p.shape(n, l.x.h, l.x.w).FLOPs() }

// timeLayer is diffusers' Timesteps(dim, flip_sin_to_cos, freq_shift) followed by
// TimestepEmbedding (linear_1 → SiLU → linear_2), and then the SiLU that every
// ResnetBlock2D applies to temb before its time_emb_proj, computed once:
//
//	out = SiLU(W2·SiLU(W1·emb(t) + b1) + b2)
type timeLayer struct {
	dim, tdim   int
	flip        bool
	shift       float64
	l1, l2      linP
	emb, h1, a1 int // saved
	h2          int // saved
	g1, ga1, g2 int // gradients
	out         act
	outSiLU     bool // the backward of the last SiLU is done by tembProjLayer's (out's only consumer), fused
}

func (l *timeLayer) forward(u *UNet) {
	b, n := u.be, u.n
	b.TimestepEmbedding(ops.EmbedShape{N: n, Dim: l.dim, FlipSinToCos: l.flip, FreqShift: l.shift}, u.tIn, u.buf(l.emb))
	ops.LinearSiLU(b, n, l.dim, l.tdim, u.buf(l.emb), u.pv[l.l1.w], u.pv[l.l1.b], u.buf(l.h1), u.buf(l.a1))
	ops.LinearSiLU(b, n, l.tdim, l.tdim, u.buf(l.a1), u.pv[l.l2.w], u.pv[l.l2.b], u.buf(l.h2), u.buf(l.out.v))
}

func (l *timeLayer) backward(u *UNet) {
	b, n := u.be, u.n
	if !l.outSiLU {
		b.SiLUBackward(u.buf(l.h2), u.buf(l.out.g), u.buf(l.g2))
	}
	ops.LinearBackwardSiLU(b, n, l.tdim, l.tdim, u.buf(l.a1), u.pv[l.l2.w], u.buf(l.g2), u.buf(l.ga1), u.gv[l.l2.w],
		u.gv[l.l2.b], u.buf(l.h1), u.buf(l.g1))
	b.LinearBackward(n, l.dim, l.tdim, u.buf(l.emb), u.pv[l.l1.w], u.buf(l.g1), nil, u.gv[l.l1.w], u.gv[l.l1.b])
}

func (l *timeLayer) flops(n int) int64 {
	return linFLOPs(n, l.dim, l.tdim) + linFLOPs(n, l.tdim, l.tdim)
}

// tembProjLayer is the time_emb_proj of every ResnetBlock2D as one linear layer: their weights stacked by rows
// (resnets in forward order) into one [ΣC, tdim] matrix, their biases into one [ΣC] vector, so that
//
//	z[n, col_r + c] = time_emb_proj_r(SiLU(temb))[n, c]     for resnet r and c < C_r
//
// is one GEMM for all of them, and each gradient one more, instead of one per resnet (23 each in celeba32); each
// resnet adds its columns of z (AddChannel with rows ΣC apart) and sums its gradient into the same columns of dz
// (ChannelSum), whose LinearBackward then runs after the last resnet's backward. Each resnet's weight and bias keep
// their own names and places in the parameter table (plan.tembProj).
type tembProjLayer struct {
	tact       act // SiLU(temb): the input
	tpre, dpre int // temb before that SiLU (timeLayer's h2) and its gradient (g2): the SiLU's backward is fused here
	in, out    int // tdim; ΣC
	wOff, bOff int // arena offsets of the stacked weights and biases
	z, dz      int // saved [ΣC] per sample and its gradient (zeroed with the gradients between modules)
}

func (l *tembProjLayer) forward(u *UNet) {
	u.be.Linear(u.n, l.in, l.out, u.buf(l.tact.v), u.sub(subParams, l.wOff, l.out*l.in), u.sub(subParams, l.bOff, l.out),
		u.buf(l.z))
}

func (l *tembProjLayer) backward(u *UNet) {
	ops.LinearBackwardSiLU(u.be, u.n, l.in, l.out, u.buf(l.tact.v), u.sub(subParams, l.wOff, l.out*l.in), u.buf(l.dz),
		u.buf(l.tact.g), u.sub(subGrads, l.wOff, l.out*l.in), u.sub(subGrads, l.bOff, l.out), u.buf(l.tpre),
		u.buf(l.dpre))
}

func (l *tembProjLayer) flops(n int) int64 { return linFLOPs(n, l.in, l.out) }

// cols is the view of columns [col, col+c) of tensor id (z or dz, [batch, ΣC]) as AddChannel and ChannelSum take
// it: from column col of row 0 to column col+c−1 of the last row.
func (l *tembProjLayer) cols(u *UNet, id, col, c int) ops.Buf {
	return u.sub(id, col, ops.RowsLen(u.n, c, l.out))
}

// resnetLayer is diffusers' ResnetBlock2D (time_embedding_norm "default",
// output_scale_factor 1):
//
//	h   = conv1(SiLU(norm1(x))) + time_emb_proj(SiLU(temb))[:, :, None, None]
//	out = shortcut(x) + conv2(dropout(SiLU(norm2(h))))
//
// (each SiLU(norm(·)) one fused op, ops.Backend.GroupNormSiLU; each conv with what is added to it one
// ops.Conv2DAdd, its backward with the time projection's channel sums one ops.Conv2DBackwardSum)
// where shortcut is a 1×1 conv when the channel count changes and the identity
// otherwise. time_emb_proj(SiLU(temb)) is the layer's columns of proj (tembProjLayer),
// computed with every other resnet's before the first of them runs.
type resnetLayer struct {
	name         string
	x, out       act
	cout         int
	norm1, norm2 normP
	conv1, conv2 convP
	proj         *tembProjLayer // the stacked time projections
	projCol      int            // this layer's first column in them
	short        *convP
	st1, h, st2  int    // saved
	k1           keptIn // conv1's input SiLU(norm1(x)) (fused: norm1(x) is not kept)
	k2           keptIn // conv2's input: SiLU(norm2(h)), after the dropout in training
	pre          int    // forward scratch: SiLU(norm2(h)) before the dropout (with dropout in the config)
	sc           int    // forward scratch
	gd, ga2, gh  int    // backward scratch
	ga1          int
	dropBase     int
}

// dropOffset is where the layer's masks start: step·2^40 + global·dropBase + first·(C·H·W of the dropout input),
// with global = first + batch = the batch when no shard is set (SetShard).
func (l *resnetLayer) dropOffset(u *UNet) uint64 {
	global, first := u.n, 0
	if u.shardOf > 0 {
		global, first = u.shardOf, u.shardFirst
	}
	return u.dropStep<<40 + uint64(global*l.dropBase) + uint64(first*l.cout*l.x.hw())
}

func (l *resnetLayer) forward(u *UNet) {
	b, n, hw := u.be, u.n, l.x.hw()
	x := u.buf(l.x.v)
	b.GroupNormSiLU(u.normShape(l.x.c, hw), x, u.pv[l.norm1.w], u.pv[l.norm1.b], u.convIn(l.k1), u.buf(l.st1))
	h := u.buf(l.h)
	ops.Conv2DAdd(b, l.conv1.shape(n, l.x.h, l.x.w), u.keepIn(l.k1), u.pv[l.conv1.w], u.pv[l.conv1.b], h,
		ops.ConvAddends{Chan: l.proj.cols(u, l.proj.z, l.projCol, l.cout), ChanLd: l.proj.out})
	in2 := u.convIn(l.k2)
	if u.dropActive {
		pre := u.buf(l.pre)
		b.GroupNormSiLU(u.normShape(l.cout, hw), h, u.pv[l.norm2.w], u.pv[l.norm2.b], pre, u.buf(l.st2))
		b.Dropout(u.p.dropout, u.dropSeed, l.dropOffset(u), pre, in2)
	} else {
		b.GroupNormSiLU(u.normShape(l.cout, hw), h, u.pv[l.norm2.w], u.pv[l.norm2.b], in2, u.buf(l.st2))
	}
	res := x
	if l.short != nil {
		res = u.buf(l.sc)
		b.Conv2D(l.short.shape(n, l.x.h, l.x.w), x, u.pv[l.short.w], u.pv[l.short.b], res)
	}
	ops.Conv2DAdd(b, l.conv2.shape(n, l.x.h, l.x.w), u.keepIn(l.k2), u.pv[l.conv2.w], u.pv[l.conv2.b], u.buf(l.out.v),
		ops.ConvAddends{Res: res})
}

func (l *resnetLayer) backward(u *UNet) {
	b, n, hw := u.be, u.n, l.x.hw()
	x, gx, gout := u.buf(l.x.v), u.buf(l.x.g), u.buf(l.out.g)
	var res ops.Buf // the identity shortcut's gradient, added with norm1's (nil with a conv shortcut)
	if l.short != nil {
		b.Conv2DBackward(l.short.shape(n, l.x.h, l.x.w), x, u.pv[l.short.w], gout, gx, u.gv[l.short.w], u.gv[l.short.b])
	} else {
		res = gout
	}
	cs := l.conv1.shape(n, l.x.h, l.x.w)
	cs2 := l.conv2.shape(n, l.x.h, l.x.w)
	ga2 := u.zero(l.ga2)
	if u.dropActive {
		gd := u.zero(l.gd)
		b.Conv2DBackward(cs2, u.keptX(l.k2), u.pv[l.conv2.w], gout, gd, u.gv[l.conv2.w], u.gv[l.conv2.b])
		b.DropoutBackward(u.p.dropout, u.dropSeed, l.dropOffset(u), gd, ga2)
	} else {
		b.Conv2DBackward(cs2, u.keptX(l.k2), u.pv[l.conv2.w], gout, ga2, u.gv[l.conv2.w], u.gv[l.conv2.b])
	}
	gh := u.zero(l.gh)
	b.GroupNormSiLUBackward(u.normShape(l.cout, hw), u.buf(l.h), u.pv[l.norm2.w], u.pv[l.norm2.b], u.buf(l.st2), ga2, gh,
		u.gv[l.norm2.w], u.gv[l.norm2.b])
	ga1 := u.zero(l.ga1)
	ops.Conv2DBackwardSum(b, cs, u.keptX(l.k1), u.pv[l.conv1.w], gh, ga1, u.gv[l.conv1.w], u.gv[l.conv1.b],
		l.proj.cols(u, l.proj.dz, l.projCol, l.cout), l.proj.out)
	ops.GroupNormSiLUBackwardRes(b, u.normShape(l.x.c, hw), x, u.pv[l.norm1.w], u.pv[l.norm1.b], u.buf(l.st1), ga1, gx,
		u.gv[l.norm1.w], u.gv[l.norm1.b], res)
}

func (l *resnetLayer) flops(n int) int64 {
	f := l.conv1.shape(n, l.x.h, l.x.w).FLOPs() + l.conv2.shape(n, l.x.h, l.x.w).FLOPs() // + its projection's (tembProjLayer)
	if l.short != nil {
		f += l.short.shape(n, l.x.h, l.x.w).FLOPs()
	}
	return f
}

// attnLayer is diffusers' Attention as built by UNetMidBlock2D and the Attn*Block2D
// blocks (norm_num_groups set, residual_connection, bias, rescale 1): with
// z = transpose(group_norm(x)) of shape [N, HW, C],
//
//	out = x + transpose(to_out(softmax(q·kᵀ/√d)·v)),  q, k, v = to_q(z), to_k(z), to_v(z)
//
// per head of d = attention_head_dim channels.
type attnLayer struct {
	x, out                     act
	heads, dh                  int
	norm                       normP
	q, k, v, o                 linP
	stats, gnT, qv, kv, vv, ov int // saved
	pv                         int // saved probabilities [N, heads, L, L]
	gn, y                      int // forward scratch
	gy, gov, gq, gk, gvv, ggnT int // backward scratch
	ggn                        int
}

func (l *attnLayer) shape(n int) ops.AttnShape {
	return ops.AttnShape{N: n, L: l.x.hw(), Heads: l.heads, D: l.dh}
}

func (l *attnLayer) forward(u *UNet) {
	b, n, c, L := u.be, u.n, l.x.c, l.x.hw()
	x := u.buf(l.x.v)
	gn, gnT := u.buf(l.gn), u.buf(l.gnT)
	b.GroupNorm(u.normShape(c, L), x, u.pv[l.norm.w], u.pv[l.norm.b], gn, u.buf(l.stats))
	b.Transpose(n, c, L, gn, gnT)
	b.Linear(n*L, c, c, gnT, u.pv[l.q.w], u.pv[l.q.b], u.buf(l.qv))
	b.Linear(n*L, c, c, gnT, u.pv[l.k.w], u.pv[l.k.b], u.buf(l.kv))
	b.Linear(n*L, c, c, gnT, u.pv[l.v.w], u.pv[l.v.b], u.buf(l.vv))
	b.Attention(l.shape(n), u.buf(l.qv), u.buf(l.kv), u.buf(l.vv), u.buf(l.ov), u.buf(l.pv))
	y := u.buf(l.y)
	b.Linear(n*L, c, c, u.buf(l.ov), u.pv[l.o.w], u.pv[l.o.b], y)
	ops.TransposeAdd(b, n, L, c, y, x, u.buf(l.out.v))
}

func (l *attnLayer) backward(u *UNet) {
	b, n, c, L := u.be, u.n, l.x.c, l.x.hw()
	gout, gx := u.buf(l.out.g), u.buf(l.x.g)
	gy := u.buf(l.gy)
	b.Transpose(n, c, L, gout, gy) // = TransposeBackward into zeros, without the fill
	gov := u.zero(l.gov)
	b.LinearBackward(n*L, c, c, u.buf(l.ov), u.pv[l.o.w], gy, gov, u.gv[l.o.w], u.gv[l.o.b])
	gq, gk, gv := u.zero(l.gq), u.zero(l.gk), u.zero(l.gvv)
	b.AttentionBackward(l.shape(n), u.buf(l.qv), u.buf(l.kv), u.buf(l.vv), u.buf(l.pv), gov, gq, gk, gv)
	gnT, ggnT := u.buf(l.gnT), u.zero(l.ggnT)
	b.LinearBackward(n*L, c, c, gnT, u.pv[l.q.w], gq, ggnT, u.gv[l.q.w], u.gv[l.q.b])
	b.LinearBackward(n*L, c, c, gnT, u.pv[l.k.w], gk, ggnT, u.gv[l.k.w], u.gv[l.k.b])
	b.LinearBackward(n*L, c, c, gnT, u.pv[l.v.w], gv, ggnT, u.gv[l.v.w], u.gv[l.v.b])
	ggn := u.buf(l.ggn)
	b.Transpose(n, L, c, ggnT, ggn) // = TransposeBackward into zeros, without the fill
	// gx = (gx + gout) + the norm's gradient: the residual's gradient passed through, then the norm's.
	ops.GroupNormBackwardRes(b, u.normShape(c, L), u.buf(l.x.v), u.pv[l.norm.w], u.buf(l.stats), ggn, gx,
		u.gv[l.norm.w], u.gv[l.norm.b], gout)
}

func (l *attnLayer) flops(n int) int64 {
	c, L := l.x.c, l.x.hw()
	// Four c×c projections over n·L positions, then q·kᵀ and p·v: 2·(2·n·L²·c).
	return 4*linFLOPs(n*L, c, c) + 4*int64(n)*int64(L)*int64(L)*int64(c)
}

// concatLayer joins the up path and a skip connection along channels (torch.cat
// dim=1, up path first).
type concatLayer struct {
	a, b, out act
}

func (l *concatLayer) forward(u *UNet) {
	u.be.Concat(u.n, l.a.c, l.b.c, l.a.hw(), u.buf(l.a.v), u.buf(l.b.v), u.buf(l.out.v))
}

func (l *concatLayer) backward(u *UNet) {
	u.be.ConcatBackward(u.n, l.a.c, l.b.c, l.a.hw(), u.buf(l.out.g), u.buf(l.a.g), u.buf(l.b.g))
}

func (l *concatLayer) flops(int) int64 { return 0 }

// upsampleLayer is Upsample2D with use_conv: nearest ×2, then a 3×3 conv.
type upsampleLayer struct {
	x, out act
	conv   convP
	up     keptIn // the interpolated x
	gup    int    // backward scratch
}

func (l *upsampleLayer) forward(u *UNet) {
	u.be.Upsample2x(u.n*l.x.c, l.x.h, l.x.w, u.buf(l.x.v), u.convIn(l.up))
	u.be.Conv2D(l.conv.shape(u.n, 2*l.x.h, 2*l.x.w), u.keepIn(l.up), u.pv[l.conv.w], u.pv[l.conv.b], u.buf(l.out.v))
}

func (l *upsampleLayer) backward(u *UNet) {
	gup := u.zero(l.gup)
	u.be.Conv2DBackward(l.conv.shape(u.n, 2*l.x.h, 2*l.x.w), u.keptX(l.up), u.pv[l.conv.w], u.buf(l.out.g),
		gup, u.gv[l.conv.w], u.gv[l.conv.b])
	u.be.Upsample2xBackward(u.n*l.x.c, l.x.h, l.x.w, gup, u.buf(l.x.g))
}

func (l *upsampleLayer) flops(n int) int64 { return l.conv.shape(n, 2*l.x.h, 2*l.x.w).FLOPs() }

// headLayer is the output: conv_out(SiLU(conv_norm_out(x))).
type headLayer struct {
	x, out act
	norm   normP
	conv   convP
	stats  int    // saved
	a      keptIn // SiLU(conv_norm_out(x)) (fused: the norm is not kept)
	ga     int    // backward scratch
}

func (l *headLayer) forward(u *UNet) {
	b := u.be
	b.GroupNormSiLU(u.normShape(l.x.c, l.x.hw()), u.buf(l.x.v), u.pv[l.norm.w], u.pv[l.norm.b], u.convIn(l.a), u.buf(l.stats))
	b.Conv2D(l.conv.shape(u.n, l.x.h, l.x.w), u.keepIn(l.a), u.pv[l.conv.w], u.pv[l.conv.b], u.buf(l.out.v))
}

func (l *headLayer) backward(u *UNet) {
	b := u.be
	ga := u.zero(l.ga)
	b.Conv2DBackward(l.conv.shape(u.n, l.x.h, l.x.w), u.keptX(l.a), u.pv[l.conv.w], u.buf(l.out.g), ga, u.gv[l.conv.w], u.gv[l.conv.b])
	b.GroupNormSiLUBackward(u.normShape(l.x.c, l.x.hw()), u.buf(l.x.v), u.pv[l.norm.w], u.pv[l.norm.b], u.buf(l.stats), ga,
		u.buf(l.x.g), u.gv[l.norm.w], u.gv[l.norm.b])
}

func (l *headLayer) flops(n int) int64 { return l.conv.shape(n, l.x.h, l.x.w).FLOPs() }
