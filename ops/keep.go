package ops

// ConvInputKeeper is a backend that can hold a convolution's input x for the backward pass in the number format its
// convolutions read x in at the current precision, in fewer bytes than float32 (the CPU backend at bf16: x as NHWC
// bfloat16, half of x's bytes). It is for an x that nothing but that convolution reads again — the U-Net's SiLU
// outputs and upsampled activations, whose producers' backward passes recompute what they need — so that x itself
// can live in scratch and the saved activation is the kept form.
//
// Conv2D and Conv2DBackward (and ConvFuser's Conv2DAdd and Conv2DBackwardSum) of shape s take Kept(s, kept) as
// their x after KeepConvInput(s, x, kept), with the results of the same calls on x itself, bit for bit: a backend
// keeps an x only where every pass of the convolution reads x rounded to that format anyway. No other op takes a
// kept x.
type ConvInputKeeper interface {
	// KeptLen is the length of the buffer that holds x of convolution s kept, a multiple of s.N (so that a model's
	// workspace scales with the batch), or 0 where this backend does not keep such an x at its precision (the
	// caller then saves x itself). It depends on s, the precision and the machine alone.
	KeptLen(s ConvShape) int
	// KeepConvInput writes x [N, Cin, H, W] into kept (KeptLen(s) elements) in the kept form.
	KeepConvInput(s ConvShape, x, kept Buf)
	// Kept is the view of kept that the convolutions of shape s take as their x. It holds no data of its own: it
	// reads what the last KeepConvInput into kept wrote.
	Kept(s ConvShape, kept Buf) Buf
}

// KeptLen is be's ConvInputKeeper.KeptLen, 0 on a backend without the capability.
func KeptLen(be Backend, s ConvShape) int {
	if k, ok := be.(ConvInputKeeper); ok {
		return k.KeptLen(s)
	}
	return 0
}
