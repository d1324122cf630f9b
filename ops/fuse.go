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
// on one launch sequence of the backend's own where it is a ConvFuser.
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
// the backward of out = x + f(GroupNorm(x)) for x's gradient (the attention block's residual).
func GroupNormBackwardRes(be Backend, s NormShape, x, gamma, stats, dy, dx, dgamma, dbeta, res Buf) {
	if f, ok := be.(NormBackwardFuser); ok {
		f.GroupNormBackwardRes(s, x, gamma, stats, dy, dx, dgamma, dbeta, res)
		return
	}
	be.Axpy(1, res, dx)
	be.GroupNormBackward(s, x, gamma, stats, dy, dx, dgamma, dbeta)
}

// GroupNormSiLUBackwardRes is Axpy(1, res, dx) followed by GroupNormSiLUBackward (a resnet with an identity
// shortcut: out = x + f(SiLU(GroupNorm(x)))).
func GroupNormSiLUBackwardRes(be Backend, s NormShape, x, gamma, beta, stats, dy, dx, dgamma, dbeta, res Buf) {
	if f, ok := be.(NormBackwardFuser); ok {
		f.GroupNormSiLUBackwardRes(s, x, gamma, beta, stats, dy, dx, dgamma, dbeta, res)
		return
	}
	be.Axpy(1, res, dx)
	be.GroupNormSiLUBackward(s, x, gamma, beta, stats, dy, dx, dgamma, dbeta)
}
