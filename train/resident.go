package train

import (
	"fmt"

	"go.uber.org/zap"

	"github.com/ddpmgo/ddpm/cuda"
	"github.com/ddpmgo/ddpm/data"
	"github.com/ddpmgo/ddpm/rng"
)

// The device-resident input of a training step.
//
// On a GPU backend (*cuda.Backend: -device cuda, or -device emu) the data set is uploaded once as uint8 when it fits
// under residentMaxBytes, and each micro-batch is formed on the device from kernel arguments alone:
//
//	x0  GatherEpoch: images order_e[k0 … k0+B−1] of the epoch's order (uploaded once per epoch, N int32), scaled
//	    to [−1, 1] and flipped by the draw of data.FlipAt, so the batches are the Loader's, bit for bit
//	t   Timesteps: rng.Intn(seed, StreamTimestep, g·B + i, T), drawn by the same Philox on the device
//
// The host Loader still advances (NextIndices, no pixels touched) so that its Position, which checkpoints save, is
// the same on every backend. What a step then copies between host and device is only the A + 1 scalars that the
// trainer reads for clipping, the NaN check and the metrics (see the package doc).
//
// On the CPU backend, or when the set is too large, the host path runs: Loader.Next on the host and an upload of
// the batch and of the timesteps per micro-batch (the code the CPU results are defined by).

// residentMaxBytes bounds the data set kept on the device (larger sets stream a batch per step from the host).
const residentMaxBytes = 4 << 30

// deviceFeed is the resident input of a *cuda.Backend run.
type deviceFeed struct {
	be         *cuda.Backend
	ds         *cuda.Dataset
	order      *cuda.Int32s
	orderEpoch int
	n          int
	flip       bool
	idx        []int
	flips      []bool
}

// newDeviceFeed uploads the data set when the backend is a GPU backend and the set fits; otherwise it returns nil
// (the host path).
func newDeviceFeed(tr *trainer, ds data.Dataset, log *zap.Logger) (*deviceFeed, error) {
	be, ok := tr.be.(*cuda.Backend)
	if !ok {
		return nil, nil
	}
	n := ds.Len()
	c, h, w := ds.Shape()
	size := c * h * w
	if int64(n)*int64(size) > residentMaxBytes {
		log.Info("data set larger than the device-resident limit: batches are uploaded per step",
			zap.Int64("bytes", int64(n)*int64(size)), zap.Int64("limit", residentMaxBytes))
		return nil, nil
	}
	var pix []uint8
	if m, ok := ds.(*data.Images); ok {
		pix = m.Pix[:n*size]
	} else {
		pix = make([]uint8, n*size)
		for i := 0; i < n; i++ {
			ds.Image(i, pix[i*size:(i+1)*size])
		}
	}
	dds, err := be.UploadDataset(pix, n, c, h, w)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	order, err := be.AllocInt32s(n)
	if err != nil {
		be.FreeDataset(dds)
		return nil, fmt.Errorf("train: %w", err)
	}
	log.Info("data set resident on the device", zap.Int("images", n), zap.Int("bytes", n*size))
	return &deviceFeed{be: be, ds: dds, order: order, orderEpoch: -1, n: n, flip: tr.cfg.Data.Flip,
		idx: make([]int, tr.B), flips: make([]bool, tr.B)}, nil
}

// nextBatch fills x0 and tBuf with micro-batch g's images and timesteps (see the package doc), on the device when
// the data set is resident there, else on the host with uploads.
func (tr *trainer) nextBatch(g uint64) error {
	B := tr.B
	f := tr.feed
	if f == nil {
		tr.ld.Next(tr.batch)
		tr.be.Upload(tr.x0, tr.batch)
		for i := range tr.tHost {
			tr.tHost[i] = float32(rng.Intn(tr.seed, rng.StreamTimestep, g*uint64(B)+uint64(i), tr.T))
		}
		tr.be.Upload(tr.tBuf, tr.tHost)
		return nil
	}
	// The Loader's position is kept normalised (a full batch is left in the epoch), so the batch starts there.
	p := tr.ld.Position()
	e := tr.ld.NextIndices(f.idx, f.flips)
	k0 := p.Index
	if e != p.Epoch {
		k0 = 0
	}
	if e != f.orderEpoch {
		if err := f.be.UploadInt32s(f.order, data.EpochOrder(tr.seed, e, f.n)); err != nil {
			return fmt.Errorf("train: epoch %d order: %w", e, err)
		}
		f.orderEpoch = e
	}
	f.be.GatherEpoch(f.ds, f.order, k0, B, f.flip, tr.seed, rng.StreamFlip, uint64(e)*uint64(f.n), tr.x0)
	f.be.Timesteps(tr.seed, rng.StreamTimestep, g*uint64(B), tr.T, tr.tBuf)
	return nil
}

// close releases the device copies.
func (f *deviceFeed) close() {
	if f == nil {
		return
	}
	f.be.FreeInt32s(f.order)
	f.be.FreeDataset(f.ds)
}
