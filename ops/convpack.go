package ops

// ConvWeight is one convolution's weight buffer w [Cout, Cin, K, K] as Conv2D and Conv2DBackward receive it.
type ConvWeight struct {
	W            Buf
	Cout, Cin, K int
}

// ConvWeightPacker is a backend that can prepare the convolutions' weights once for many calls (the GPU backend:
// all of them packed in its kernels' layouts and number format in one launch) instead of once per call.
//
// After PackConvWeights(ws) the backend may keep derived copies of these weights (packed, converted) and use them
// in Conv2D and Conv2DBackward for a w that is exactly one of them (the same storage, length and shape), until the
// next PackConvWeights, or until a write to one of them through the backend's own write paths (Upload, Copy,
// Fill, AdamWStep, EMA, StepControl.Update; on a device, an address handed to external code such as a collective),
// or a change of precision, each of which makes the backend drop its copies. A caller must not otherwise write a
// packed weight between the pack and its use: in particular it must not pass one as another op's output. The
// results are those of the same calls without PackConvWeights, bit for bit. A backend that does not implement it
// packs (where it packs at all) on each call.
type ConvWeightPacker interface {
	PackConvWeights(ws []ConvWeight)
}
