package cuda

import (
	"fmt"
	"math"

	"github.com/ddpmgo/ddpm/ops"
)

// Launcher of kernels/data.cu.

// Dataset is a uint8 image set [N, C, H, W] resident on the device, uploaded once.
type Dataset struct {
	p          DevicePtr
	N, C, H, W int
}

// UploadDataset copies n images of c×h×w bytes to the device.
func (be *Backend) UploadDataset(pixels []uint8, n, c, h, w int) (*Dataset, error) {
	if n <= 0 || c <= 0 || h <= 0 || w <= 0 || len(pixels) != n*c*h*w {
		return nil, fmt.Errorf("cuda UploadDataset: %d bytes for [%d, %d, %d, %d]", len(pixels), n, c, h, w)
	}
	p, err := AllocFrom(be.d, pixels)
	if err != nil {
		return nil, fmt.Errorf("cuda UploadDataset [%d, %d, %d, %d]: %w", n, c, h, w, err)
	}
	return &Dataset{p: p, N: n, C: c, H: h, W: w}, nil
}

// FreeDataset releases the device copy.
func (be *Backend) FreeDataset(ds *Dataset) error { return be.d.Free(ds.p) }

// GatherBatch writes out[s] = ds[idx[s]]/127.5 − 1, mirrored left-right where flip[s] ≠ 0, for s < batch. idx and
// flip are device arrays of batch int32 (made with AllocFrom or filled by a kernel); out holds batch·C·H·W floats.
func (be *Backend) GatherBatch(ds *Dataset, batch int, idx, flip DevicePtr, out ops.Buf) {
	o := be.bufs("GatherBatch", batch*ds.C*ds.H*ds.W, []string{"out"}, out)[0]
	be.launch1D("GatherBatch", "gather_u8_f32", o.n, Ptr(ds.p), Ptr(idx), Ptr(flip), Ptr(o.p), I32(int32(batch)),
		I32(int32(ds.N)), I32(int32(ds.C)), I32(int32(ds.H)), I32(int32(ds.W)))
}

// Int32s is an int32 array in device memory (an epoch's image order).
type Int32s struct {
	p DevicePtr
	n int
}

// Len is the number of elements.
func (a *Int32s) Len() int { return a.n }

// AllocInt32s returns device memory for n int32 (uninitialised).
func (be *Backend) AllocInt32s(n int) (*Int32s, error) {
	if n < 1 {
		return nil, fmt.Errorf("cuda AllocInt32s: n = %d", n)
	}
	p, err := be.d.Alloc(4 * n)
	if err != nil {
		return nil, fmt.Errorf("cuda AllocInt32s(%d): %w", n, err)
	}
	return &Int32s{p: p, n: n}, nil
}

// UploadInt32s copies src (each value must fit an int32) into dst (same length).
func (be *Backend) UploadInt32s(dst *Int32s, src []int) error {
	if len(src) != dst.n {
		return fmt.Errorf("cuda UploadInt32s: %d values into %d elements", len(src), dst.n)
	}
	v := make([]int32, len(src))
	for i, x := range src {
		if x < math.MinInt32 || x > math.MaxInt32 {
			return fmt.Errorf("cuda UploadInt32s: value %d at %d does not fit an int32", x, i)
		}
		v[i] = int32(x)
	}
	return Upload(be.d, dst.p, v)
}

// FreeInt32s releases the array.
func (be *Backend) FreeInt32s(a *Int32s) error {
	err := be.d.Free(a.p)
	a.p, a.n = 0, 0
	return err
}

// GatherEpoch writes the batch of images order[k0] … order[k0+batch−1] of the device-resident set into out as
// x/127.5 − 1, mirroring sample s left-right when flip and rng.Uniform(seed, stream, flipOffset+k0+s) < 0.5 (the
// draw of data.FlipAt, with flipOffset = epoch·N and stream rng.StreamFlip). Only kernel arguments cross from the
// host: no copy.
func (be *Backend) GatherEpoch(ds *Dataset, order *Int32s, k0, batch int, flip bool, seed uint64, stream uint32,
	flipOffset uint64, out ops.Buf) {
	const op = "GatherEpoch"
	if k0 < 0 || batch < 1 || k0+batch > order.n {
		panic(fmt.Sprintf("cuda %s: images [%d, %d+%d) of an order of %d", op, k0, k0, batch, order.n))
	}
	o := be.bufs(op, batch*ds.C*ds.H*ds.W, []string{"out"}, out)[0]
	i32(op, []int{ds.N, ds.C, ds.H, ds.W}, ds.C*ds.H*ds.W, o.n, k0+batch)
	be.launch1D(op, "gather_epoch_u8_f32", o.n, Ptr(ds.p), Ptr(order.p), Ptr(o.p), I32(int32(batch)),
		I32(int32(ds.N)), I32(int32(ds.C)), I32(int32(ds.H)), I32(int32(ds.W)), I32(int32(k0)), I32(b2i(flip)),
		U64(seed), U32(stream), U64(flipOffset))
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
