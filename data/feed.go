package data

import (
	"fmt"

	"github.com/ddpmgo/ddpm/ops"
)

// HostFeed is ops.Feed with the images in host memory: Gather converts the batch on the host (Gather's values) and
// uploads it. It is the definition of the device feeds (package cuda, kernels/data.cu: gather_epoch_u8_f32) and the
// feed of backends without one; the training loop uses it on the CPU and for sets too large for a device.
type HostFeed struct {
	be      ops.Backend
	ds      Dataset
	mem     *Images // ds when it is in memory
	order   []int
	scratch []uint8
	idx     []int
	flips   []bool
	batch   []float32
}

// NewHostFeed reads the images of ds as the batches need them and uploads each batch to be.
func NewHostFeed(be ops.Backend, ds Dataset) *HostFeed {
	f := &HostFeed{be: be, ds: ds}
	f.mem, _ = ds.(*Images)
	c, h, w := ds.Shape()
	f.scratch = make([]uint8, c*h*w)
	return f
}

// SetOrder keeps the epoch's order (a permutation of the images).
func (f *HostFeed) SetOrder(order []int) error {
	if len(order) != f.ds.Len() {
		return fmt.Errorf("data: feed: an order of %d images for a set of %d", len(order), f.ds.Len())
	}
	f.order = append(f.order[:0], order...)
	return nil
}

// Gather writes images order[k0 … k0+batch) into out, each mirrored when flip and FlipAt(seed, epoch, n, k0+s).
func (f *HostFeed) Gather(epoch, k0, batch int, flip bool, seed uint64, out ops.Buf) {
	n := f.ds.Len()
	c, h, w := f.ds.Shape()
	size := c * h * w
	if k0 < 0 || batch < 1 || k0+batch > len(f.order) || out.Len() != batch*size {
		panic(fmt.Sprintf("data: feed Gather: images [%d, %d+%d) of an order of %d into %d floats (want %d)",
			k0, k0, batch, len(f.order), out.Len(), batch*size))
	}
	if len(f.batch) != batch*size {
		f.batch, f.idx, f.flips = make([]float32, batch*size), make([]int, batch), make([]bool, batch)
	}
	for s := range batch {
		f.idx[s] = f.order[k0+s]
		f.flips[s] = flip && FlipAt(seed, epoch, n, k0+s)
	}
	if f.mem != nil {
		Gather(f.batch, f.mem, f.idx, f.flips)
	} else {
		for s, i := range f.idx {
			f.ds.Image(i, f.scratch)
			gatherOne(f.batch[s*size:(s+1)*size], f.scratch, c, h, w, f.flips[s])
		}
	}
	f.be.Upload(out, f.batch)
}

// Free does nothing: the images belong to the data set.
func (f *HostFeed) Free() error { return nil }
