package data

import (
	"fmt"

	"github.com/ddpmgo/ddpm/rng"
)

// Batch order. Everything random here is a pure function of (seed, epoch, position), through the counter-based
// generator in package rng, so a run is reproducible and a resumed run continues exactly:
//
//	order_e       = rng.Perm(seed, rng.StreamShuffle, e·N, N)                   (a permutation of 0..N−1)
//	image k of e  = order_e[k]                                                  (k = 0, 1, …, counting within epoch e)
//	flip k of e   = rng.Uniform(seed, rng.StreamFlip, e·N + k) < 0.5             (only when flipping is on)
//	batch j of e  = images k = j·B … j·B+B−1, for j < ⌊N/B⌋
//
// The last N mod B images of each epoch's order are dropped (every batch has exactly B images, so the step has one
// shape, and the dropped images differ from epoch to epoch because the order does). A horizontal flip mirrors each
// row: x[c][y][x] ← x[c][y][W−1−x].

// EpochOrder is the order in which epoch e visits the n images: rng.Perm(seed, rng.StreamShuffle, e·n, n). Perm
// reads draws offset … offset+n−2 of the stream, so the offset e·n gives every epoch its own draws (an offset of e
// would make epoch e+1 reuse all but one of epoch e's draws, shifted by one, and the orders would be related).
func EpochOrder(seed uint64, epoch, n int) []int {
	return rng.Perm(seed, rng.StreamShuffle, uint64(epoch)*uint64(n), n)
}

// FlipAt says whether the k-th image drawn in epoch e (of a dataset of n images) is mirrored:
// rng.Uniform(seed, rng.StreamFlip, e·n + k) < 0.5.
func FlipAt(seed uint64, epoch, n, k int) bool {
	return rng.Uniform(seed, rng.StreamFlip, uint64(epoch)*uint64(n)+uint64(k)) < 0.5
}

// Position is where a Loader is: the next batch starts at image Index (counted within the epoch's order) of epoch
// Epoch. Save it with a checkpoint and Seek to it to continue with the same batches.
type Position struct {
	Epoch int `json:"epoch" toml:"epoch"`
	Index int `json:"index" toml:"index"`
}

// Loader yields shuffled batches of a Dataset as float32 in [−1, 1] (see ToFloat), B×C×H×W in NCHW order. It is
// not safe for concurrent use.
type Loader struct {
	ds         Dataset
	n, c, h, w int
	batch      int
	seed       uint64
	flip       bool
	pos        Position
	order      []int
	orderEpoch int
	scratch    []uint8
	idx        []int
	flips      []bool
	mem        *Images
}

// NewLoader makes a Loader at epoch 0, index 0. batch must be between 1 and ds.Len(); with flip, images are
// mirrored left-right with probability 1/2 each (see FlipAt).
func NewLoader(ds Dataset, batch int, seed uint64, flip bool) (*Loader, error) {
	n := ds.Len()
	c, h, w := ds.Shape()
	if c <= 0 || h <= 0 || w <= 0 {
		return nil, fmt.Errorf("data: loader: image shape %dx%dx%d is not positive", c, h, w)
	}
	if batch < 1 || batch > n {
		return nil, fmt.Errorf("data: loader: batch %d must be between 1 and the %d images of the dataset", batch, n)
	}
	l := &Loader{
		ds: ds, n: n, c: c, h: h, w: w, batch: batch, seed: seed, flip: flip,
		orderEpoch: -1,
		scratch:    make([]uint8, c*h*w),
		idx:        make([]int, batch),
		flips:      make([]bool, batch),
	}
	l.mem, _ = ds.(*Images)
	return l, nil
}

// BatchShape is (B, C, H, W); Next fills B·C·H·W floats.
func (l *Loader) BatchShape() (b, c, h, w int) { return l.batch, l.c, l.h, l.w }

// StepsPerEpoch is ⌊N/B⌋, the number of batches in one epoch.
func (l *Loader) StepsPerEpoch() int { return l.n / l.batch }

// Position is where the next batch starts.
func (l *Loader) Position() Position { return l.pos }

// Seek moves to p, so that the next batch is the one a Loader with the same dataset, batch, seed and flip would
// produce after reaching p. Epoch must be ≥ 0 and Index in [0, N].
func (l *Loader) Seek(p Position) error {
	if p.Epoch < 0 || p.Index < 0 || p.Index > l.n {
		return fmt.Errorf("data: loader: seek to epoch %d index %d: want epoch ≥ 0 and index in [0, %d]", p.Epoch, p.Index, l.n)
	}
	l.pos = p
	l.normalize()
	return nil
}

// normalize moves to the start of the next epoch when fewer than B images are left in this one.
func (l *Loader) normalize() {
	if l.pos.Index+l.batch > l.n {
		l.pos = Position{Epoch: l.pos.Epoch + 1}
	}
}

// NextIndices advances by one batch and writes which images it holds and whether each is flipped (all false
// without flipping) into idx and flip (each at least B long). It returns the batch's epoch. This is all a device
// that holds the dataset needs to gather the batch itself; Next does the gathering on the host.
func (l *Loader) NextIndices(idx []int, flip []bool) (epoch int) {
	l.normalize()
	e := l.pos.Epoch
	if l.orderEpoch != e {
		l.order = EpochOrder(l.seed, e, l.n)
		l.orderEpoch = e
	}
	for j := 0; j < l.batch; j++ {
		k := l.pos.Index + j
		idx[j] = l.order[k]
		flip[j] = l.flip && FlipAt(l.seed, e, l.n, k)
	}
	l.pos.Index += l.batch
	l.normalize()
	return e
}

// Next advances by one batch and writes it into dst (at least B·C·H·W floats, NCHW) as float32 in [−1, 1]. It
// allocates nothing except the epoch's order, once per epoch. It returns the batch's epoch.
func (l *Loader) Next(dst []float32) (epoch int) {
	size := l.c * l.h * l.w
	if len(dst) < l.batch*size {
		panic(fmt.Sprintf("data: loader: batch buffer of %d floats, need %d (%dx%dx%dx%d)", len(dst), l.batch*size, l.batch, l.c, l.h, l.w))
	}
	epoch = l.NextIndices(l.idx, l.flips)
	for j, i := range l.idx {
		var src []uint8
		if l.mem != nil {
			src = l.mem.At(i)
		} else {
			l.ds.Image(i, l.scratch)
			src = l.scratch
		}
		gatherOne(dst[j*size:(j+1)*size], src, l.c, l.h, l.w, l.flips[j])
	}
	return epoch
}

// Gather writes images idx of m into dst (len(idx)·C·H·W floats, NCHW) as float32 in [−1, 1], mirroring image j
// when flip[j]. It is the host twin of a device gather.
func Gather(dst []float32, m *Images, idx []int, flip []bool) {
	size := m.ImageSize()
	for j, i := range idx {
		gatherOne(dst[j*size:(j+1)*size], m.At(i), m.C, m.H, m.W, flip[j])
	}
}

// gatherOne converts one CHW image, mirrored left-right when flip: dst[c][y][x] = f(src[c][y][W−1−x]).
func gatherOne(dst []float32, src []uint8, c, h, w int, flip bool) {
	if !flip {
		ToFloat(dst, src[:c*h*w])
		return
	}
	for r := 0; r < c*h; r++ {
		s, d := src[r*w:(r+1)*w], dst[r*w:(r+1)*w]
		for x := range d {
			d[x] = float32(s[w-1-x])/127.5 - 1
		}
	}
}
