package ops

// ConvAddends are what a resnet adds to a convolution's output right after it (the model's resnetLayer): the time
// projection per sample and channel, and the residual. Either may be nil.
type ConvAddends struct {
	Chan   Buf // y[n,o,·] += Chan[n·ChanLd + o]: AddChannel's p (RowsLen(N, Cout, ChanLd) elements)
	ChanLd int
	Res    Buf // y += Res, [N, Cout, OH, OW]; not y itself
}

// ConvFuser is a backend that adds the addends in the convolution's own pass (the GPU backend: in the GEMM's
// epilogue, and the channel sums in its packing of dy) instead of in launches of their own. Its results are those
// of Conv2DAdd and Conv2DBackwardSum below on a backend without it, bit for bit for Conv2DAdd's (the same additions
// in the same order) and within float rounding for the channel sums (the order of a sum).
type ConvFuser interface {
	Conv2DAdd(s ConvShape, x, w, b, y Buf, a ConvAddends)
	Conv2DBackwardSum(s ConvShape, x, w, dy, dx, dw, db, dchan Buf, ld int)
}

// Conv2DAdd is Conv2D followed by AddChannel (a.Chan) and Add (a.Res), in that order:
//
//	y[n,o,i,j] = ((conv(x, w)[n,o,i,j] + b[o]) + Chan[n·ld + o]) + Res[n,o,i,j]
//
// A ConvFuser computes it in its own way (one launch sequence on the GPU); any other backend, as written here.
func Conv2DAdd(be Backend, s ConvShape, x, w, b, y Buf, a ConvAddends) {
	if f, ok := be.(ConvFuser); ok {
		f.Conv2DAdd(s, x, w, b, y, a)
		return
	}
	be.Conv2D(s, x, w, b, y)
	if a.Chan != nil {
		be.AddChannel(s.N, s.Cout, s.OutH()*s.OutW(), a.ChanLd, y, a.Chan, y)
	}
	if a.Res != nil {
		be.Add(y, a.Res, y)
	}
}

// Conv2DBackwardSum is Conv2DBackward and, for dchan ≠ nil, ChannelSum(N, Cout, OH·OW, ld, dy, dchan): Conv2DAdd's
// backward for its weights, bias, input and Chan (Res's gradient is dy itself).
func Conv2DBackwardSum(be Backend, s ConvShape, x, w, dy, dx, dw, db, dchan Buf, ld int) {
	if f, ok := be.(ConvFuser); ok {
		f.Conv2DBackwardSum(s, x, w, dy, dx, dw, db, dchan, ld)
		return
	}
	if dchan != nil {
		be.ChannelSum(s.N, s.Cout, s.OutH()*s.OutW(), ld, dy, dchan)
	}
	be.Conv2DBackward(s, x, w, dy, dx, dw, db)
}

// NormBackwardFuser is a backend that adds a residual's gradient in a group norm's backward pass (the GPU backend:
// in the kernel's store of dx) instead of in an Axpy of its own. Its results are those of GroupNormBackwardRes and
// GroupNormSiLUBackwardRes below on a backend without it, bit for bit (the same additions in the same order).
type NormBackwardFuser interface {
	GroupNormBackwardRes(s NormShape, x, gamma, stats, dy, dx, dgamma, dbeta, res Buf)
	GroupNormSiLUBackwardRes(s NormShape, x, gamma, beta, stats, dy, dx, dgamma, dbeta, res Buf)
}

// GroupNormBackwardRes is Axpy(1, res, dx) followed by GroupNormBackward: dx = (dx + res) + the norm's gradient,
// the backward of out = x + f(GroupNorm(x)) for x's gradient (the attention block's residual). res may be nil (no
// residual: GroupNormBackward alone).
func GroupNormBackwardRes(be Backend, s NormShape, x, gamma, stats, dy, dx, dgamma, dbeta, res Buf) {
	if f, ok := be.(NormBackwardFuser); ok {
		f.GroupNormBackwardRes(s, x, gamma, stats, dy, dx, dgamma, dbeta, res)
		return
	}
	if res != nil {
		be.Axpy(1, res, dx)
	}
	be.GroupNormBackward(s, x, gamma, stats, dy, dx, dgamma, dbeta)
}

// GroupNormSiLUBackwardRes is Axpy(1, res, dx) followed by GroupNormSiLUBackward (a resnet with an identity
// shortcut: out = x + f(SiLU(GroupNorm(x)))); res may be nil, as in GroupNormBackwardRes.
func GroupNormSiLUBackwardRes(be Backend, s NormShape, x, gamma, beta, stats, dy, dx, dgamma, dbeta, res Buf) {
	if f, ok := be.(NormBackwardFuser); ok {
		f.GroupNormSiLUBackwardRes(s, x, gamma, beta, stats, dy, dx, dgamma, dbeta, res)
		return
	}
	if res != nil {
		be.Axpy(1, res, dx)
	}
	be.GroupNormSiLUBackward(s, x, gamma, beta, stats, dy, dx, dgamma, dbeta)
}

// LinearFuser is a backend that applies SiLU in a linear layer's own pass (the GPU backend: in the GEMM's epilogue)
// instead of in a launch of its own. Its results are those of LinearSiLU and LinearBackwardSiLU below on a backend
// without it, bit for bit (the same operations on the same values).
type LinearFuser interface {
	LinearSiLU(n, in, out int, x, w, b, y, a Buf)
	LinearBackwardSiLU(n, in, out int, x, w, dy, dx, dw, db, h, dh Buf)
}

// LinearSiLU is Linear (y = x·wᵀ + b) followed by SiLU(y → a): a linear layer and the activation after it, keeping
// both (y for the activation's backward).
func LinearSiLU(be Backend, n, in, out int, x, w, b, y, a Buf) {
	if f, ok := be.(LinearFuser); ok {
		f.LinearSiLU(n, in, out, x, w, b, y, a)
		return
	}
	be.Linear(n, in, out, x, w, b, y)
	be.SiLU(y, a)
}

// LinearBackwardSiLU is LinearBackward followed by SiLUBackward(h, dx, dh): the backward of a linear layer whose
// input is x = SiLU(h), into dx and on to dh (dh += dx·SiLU'(h)).
func LinearBackwardSiLU(be Backend, n, in, out int, x, w, dy, dx, dw, db, h, dh Buf) {
	if f, ok := be.(LinearFuser); ok {
		f.LinearBackwardSiLU(n, in, out, x, w, dy, dx, dw, db, h, dh)
		return
	}
	be.LinearBackward(n, in, out, x, w, dy, dx, dw, db)
	be.SiLUBackward(h, dx, dh)
}

// TransposeFuser is a backend that adds a residual in a transpose's own pass (the GPU backend: in the kernel's
// store). Its results are those of TransposeAdd below on a backend without it, bit for bit.
type TransposeFuser interface {
	TransposeAdd(n, r, c int, x, res, y Buf)
}

// TransposeAdd is Transpose(n, r, c, x → y) followed by Add(y, res, y): y = transpose(x) + res (the attention
// block's output and its residual); y must be neither x nor res.
func TransposeAdd(be Backend, n, r, c int, x, res, y Buf) {
	if f, ok := be.(TransposeFuser); ok {
		f.TransposeAdd(n, r, c, x, res, y)
		return
	}
	be.Transpose(n, r, c, x, y)
	be.Add(y, res, y)
}
