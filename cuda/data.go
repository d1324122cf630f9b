package cuda

import (
	"fmt"
	"math"

	"github.com/ddpmgo/ddpm/ops"
	"github.com/ddpmgo/ddpm/rng"
)

// Launchers of kernels/data.cu.

// feed is ops.Feed on the device: the uint8 images [N, C, H, W], uploaded once, and the epoch's order as int32,
// uploaded once per epoch. Its definition is data.HostFeed, which it matches bit for bit.
type feed struct {
	be         *Backend
	pix, order DevicePtr
	n, c, h, w int
	orderHost  []int32
}

// NewFeed copies n images of c×h×w bytes to the device (ops.Feeder).
func (be *Backend) NewFeed(pix []uint8, n, c, h, w int) (ops.Feed, error) {
	if n <= 0 || c <= 0 || h <= 0 || w <= 0 || len(pix) != n*c*h*w {
		return nil, fmt.Errorf("cuda NewFeed: %d bytes for [%d, %d, %d, %d]", len(pix), n, c, h, w)
	}
	if n > math.MaxInt32 || c*h*w > math.MaxInt32 {
		return nil, fmt.Errorf("cuda NewFeed [%d, %d, %d, %d]: sizes must fit an int32", n, c, h, w)
	}
	p, err := AllocFrom(be.d, pix)
	if err != nil {
		return nil, fmt.Errorf("cuda NewFeed [%d, %d, %d, %d]: %w", n, c, h, w, err)
	}
	order, err := be.d.Alloc(4 * n)
	if err != nil {
		be.d.Free(p)
		return nil, fmt.Errorf("cuda NewFeed: order of %d images: %w", n, err)
	}
	return &feed{be: be, pix: p, order: order, n: n, c: c, h: h, w: w, orderHost: make([]int32, n)}, nil
}

// SetOrder uploads the epoch's order.
func (f *feed) SetOrder(order []int) error {
	if len(order) != f.n {
		return fmt.Errorf("cuda Feed SetOrder: %d values for %d images", len(order), f.n)
	}
	for i, x := range order {
		if x < 0 || x >= f.n {
			return fmt.Errorf("cuda Feed SetOrder: image %d at %d out of [0, %d)", x, i, f.n)
		}
		f.orderHost[i] = int32(x)
	}
	return Upload(f.be.d, f.order, f.orderHost)
}

// Gather launches gather_epoch_u8_f32: only kernel arguments cross from the host.
func (f *feed) Gather(epoch, k0, batch int, flip bool, seed uint64, out ops.Buf) {
	const op = "Feed Gather"
	if k0 < 0 || batch < 1 || k0+batch > f.n || epoch < 0 {
		panic(fmt.Sprintf("cuda %s: epoch %d, images [%d, %d+%d) of an order of %d", op, epoch, k0, k0, batch, f.n))
	}
	be := f.be
	o := be.bufs(op, batch*f.c*f.h*f.w, []string{"out"}, out)[0]
	i32(op, []int{f.n, f.c, f.h, f.w}, f.c*f.h*f.w, o.n, k0+batch)
	be.launch1D(op, "gather_epoch_u8_f32", o.n, Ptr(f.pix), Ptr(f.order), Ptr(o.p), I32(int32(batch)),
		I32(int32(f.n)), I32(int32(f.c)), I32(int32(f.h)), I32(int32(f.w)), I32(int32(k0)), I32(b2i(flip)),
		U64(seed), U32(rng.StreamFlip), U64(uint64(epoch)*uint64(f.n)))
}

// Free releases the images and the order.
func (f *feed) Free() error {
	var err error
	for _, p := range []*DevicePtr{&f.pix, &f.order} {
		if *p != 0 {
			if e := f.be.d.Free(*p); err == nil {
				err = e
			}
			*p = 0
		}
	}
	return err
}

// Timesteps draws t[i] = rng.Intn(seed, stream, offset+i, T) for i < t.Len() on the device, as float values: the
// training timesteps without an upload.
func (be *Backend) Timesteps(seed uint64, stream uint32, offset uint64, T int, t ops.Buf) {
	ts := be.buf("Timesteps", "t", t)
	if T < 1 {
		panic(fmt.Sprintf("cuda Timesteps: T = %d", T))
	}
	i32("Timesteps", T, ts.n, T)
	be.launch1D("Timesteps", "timesteps_f32", ts.n, Ptr(ts.p), I32(int32(ts.n)), U64(seed), U32(stream), U64(offset),
		I32(int32(T)))
}
