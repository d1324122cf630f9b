package train

import (
	"fmt"

	"go.uber.org/zap"

	"github.com/ddpmgo/ddpm/data"
	"github.com/ddpmgo/ddpm/ops"
)

// residentMaxBytes bounds the data set a backend with ops.Feeder holds (larger sets are gathered on the host and
// uploaded a batch at a time, data.HostFeed).
const residentMaxBytes = 4 << 30

// feed forms the training batches: the host Loader decides the batch (it advances by indices only, so its
// Position, which checkpoints save, is the same on every backend) and the ops.Feed gathers it, on the device when
// the backend holds the set (ops.Feeder), else on the host (data.HostFeed, the definition). Either way the batch is
// the Loader's, bit for bit.
type feed struct {
	f          ops.Feed
	n          int
	flip       bool
	seed       uint64
	orderEpoch int
	idx        []int
	flips      []bool
}

// newFeed puts ds on be when be is an ops.Feeder and the set fits under residentMaxBytes.
func newFeed(be ops.Backend, ds data.Dataset, flip bool, seed uint64, log *zap.Logger) (*feed, error) {
	n := ds.Len()
	c, h, w := ds.Shape()
	size := c * h * w
	fd := &feed{n: n, flip: flip, seed: seed, orderEpoch: -1}
	fr, ok := be.(ops.Feeder)
	switch {
	case !ok:
		fd.f = data.NewHostFeed(be, ds)
		return fd, nil
	case int64(n)*int64(size) > residentMaxBytes:
		log.Info("data set larger than the device-resident limit: batches are uploaded per step",
			zap.Int64("bytes", int64(n)*int64(size)), zap.Int64("limit", residentMaxBytes))
		fd.f = data.NewHostFeed(be, ds)
		return fd, nil
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
	f, err := fr.NewFeed(pix, n, c, h, w)
	if err != nil {
		return nil, fmt.Errorf("train: %w", err)
	}
	log.Info("data set resident on the device", zap.Int("images", n), zap.Int("bytes", n*size))
	fd.f = f
	return fd, nil
}

// next advances ld by one (global) batch and gathers its images first … first+n−1 into x0 (the whole batch on one
// rank, this rank's shard on several); a new epoch's order is handed to the feed first.
func (fd *feed) next(ld *data.Loader, x0 ops.Buf, first, n int) error {
	if fd.idx == nil {
		b, _, _, _ := ld.BatchShape()
		fd.idx, fd.flips = make([]int, b), make([]bool, b)
	}
	// The Loader's position is kept normalised (a full batch is left in the epoch), so the batch starts there.
	p := ld.Position()
	e := ld.NextIndices(fd.idx, fd.flips)
	k0 := p.Index
	if e != p.Epoch {
		k0 = 0
	}
	if e != fd.orderEpoch {
		if err := fd.f.SetOrder(data.EpochOrder(fd.seed, e, fd.n)); err != nil {
			return fmt.Errorf("train: epoch %d order: %w", e, err)
		}
		fd.orderEpoch = e
	}
	fd.f.Gather(e, k0+first, n, fd.flip, fd.seed, x0)
	return nil
}

func (fd *feed) free() {
	if fd != nil {
		fd.f.Free()
	}
}
