package ops

// Feeder is a backend that can hold a training set of uint8 images and form batches from it without copies
// (package cuda: kernels/data.cu). The host implementation, and so the definition, is data.HostFeed; the training
// loop uses a Feeder when the backend has one and the set fits (see package train, feed.go).
type Feeder interface {
	// NewFeed copies n images of c×h×w bytes (NCHW, pix[i·c·h·w …] is image i) to the backend, once.
	NewFeed(pix []uint8, n, c, h, w int) (Feed, error)
}

// Feed is a training set held by a backend, and the batches of an epoch taken from it.
type Feed interface {
	// SetOrder sets the order in which the current epoch visits the images (a permutation of 0 … n−1,
	// data.EpochOrder): copied once per epoch.
	SetOrder(order []int) error
	// Gather writes the batch of images order[k0] … order[k0+batch−1] into out (batch·c·h·w floats) as
	// data.ToFloat does (x/127.5 − 1), mirroring image k0+s left-right when flip and data.FlipAt(seed, epoch, n,
	// k0+s): only scalars cross from the host.
	Gather(epoch, k0, batch int, flip bool, seed uint64, out Buf)
	// Free releases the copy.
	Free() error
}
