package cuda

import (
	"fmt"

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
