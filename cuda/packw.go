package cuda

import (
	"fmt"
	"slices"

	"github.com/ddpmgo/ddpm/ops"
)

// Convolution weights packed once for many calls (ops.ConvWeightPacker): the model hands every conv weight of its
// forward pass to PackConvWeights, which packs each in both layouts of kernels/conv2d.cu -- tap-major [Cout][KK][Cp]
// for the forward (Cp = Cin padded as convChannels says) and flipped [Cin][KK][Cp] for backward-data (Cp = Cout
// padded) -- in the current precision's element, all in one launch of conv2d_pack_w_batch_f32 (_bf16). Conv2D and
// Conv2DBackward then read those copies instead of launching conv2d_pack_w_* for a w that is exactly a packed
// weight (address, length and shape); any other w is packed per call as before. The copies are the same values the
// per-call pack writes (the same conv_pack_w), so results do not change by a bit.
//
// Invalidation: the table is dropped by the next PackConvWeights, by SetPrecision, and by every write through the
// backend's own paths that overlaps a packed weight: Upload, Copy, Fill, Free, AdamWStep, EMA, StepControl.Update
// and Buf.Ptr (an address handed to external code, e.g. an NCCL broadcast). Writes to other buffers (the gradients,
// the workspace) leave it valid, so the backward pass between a Forward and its AdamW step uses the copies too.
// What it does not see: a packed weight passed as another op's output (ops.ConvWeightPacker forbids it).

// convPackWords is the size of one table entry in 8-byte words (struct ConvPackEntry of kernels/conv2d.cu).
const convPackWords = 5

// packedW is one weight of the table: its source (address, elements, shape) and its two packed copies.
type packedW struct {
	src              DevicePtr
	n                int
	cout, cin, k     int
	fwd, bwd         DevicePtr // [Cout][KK][cinP] and flipped [Cin][KK][coutP]
	fwdCp, bwdCp     int
	fwdRows, bwdRows int
}

// wpack is the backend's packed weights: a grow-only device buffer of the copies (never freed between steps; Close
// frees it), the device table of the batch kernel and its host copy (uploaded only when it changes).
type wpack struct {
	buf        DevicePtr
	bytes      int
	table      DevicePtr
	tableBytes int
	host, next []uint64
	entries    []packedW
	prec       ops.Precision
	valid      bool
}

// PackConvWeights packs every weight of ws in both layouts, in one launch (see above; ops.ConvWeightPacker).
func (be *Backend) PackConvWeights(ws []ops.ConvWeight) {
	const op = "PackConvWeights"
	pw := &be.pw
	pw.valid = false
	if len(ws) == 0 {
		return
	}
	if 2*len(ws) > 65535 {
		panic(fmt.Sprintf("cuda %s: %d weights, more than the grid's 65535/2", op, len(ws)))
	}
	es, prec := be.packElem(), be.Precision()
	pw.entries = pw.entries[:0]
	total, wfloats, elems, maxN := 0, 0, 0, 0
	region := func(elems int) int {
		off := total
		total += roundUp(es*elems+4*convSlack, 256)
		return off
	}
	for i, w := range ws {
		if w.Cout < 1 || w.Cin < 1 || w.K < 1 {
			panic(fmt.Sprintf("cuda %s: weight %d: invalid shape %+v", op, i, w))
		}
		kk := w.K * w.K
		cb := be.arg(op, w, "w", w.W, w.Cout*w.Cin*kk)
		e := packedW{src: cb.p, n: cb.n, cout: w.Cout, cin: w.Cin, k: w.K, fwdCp: convChannels(w.Cin, w.K, prec),
			bwdCp: convChannels(w.Cout, w.K, prec)}
		e.fwdRows, e.bwdRows = w.Cout, w.Cin
		nf, nb := e.fwdRows*kk*e.fwdCp, e.bwdRows*kk*e.bwdCp
		i32(op, w, nf+convSlack, nb+convSlack)
		e.fwd, e.bwd = DevicePtr(region(nf)), DevicePtr(region(nb))
		maxN, elems, wfloats = max(maxN, nf, nb), elems+nf+nb, wfloats+cb.n
		pw.entries = append(pw.entries, e)
	}
	if total > pw.bytes {
		if pw.buf != 0 {
			be.keep(op, be.d.Sync()) // queued kernels may still read the old copies
			be.keep(op, be.d.Free(pw.buf))
			pw.buf, pw.bytes = 0, 0
		}
		size := max(total, 2*pw.bytes)
		p, err := be.d.Alloc(size)
		if err != nil {
			panic(&ops.DeviceError{Op: fmt.Sprintf("cuda %s: %d bytes of packed weights", op, size), Err: err})
		}
		pw.buf, pw.bytes = p, size
	}
	pw.next = slices.Grow(pw.next[:0], convPackWords*len(pw.entries)*2)
	for i := range pw.entries {
		e := &pw.entries[i]
		e.fwd += pw.buf
		e.bwd += pw.buf
		kk := uint64(e.k * e.k)
		pw.next = append(pw.next, uint64(e.src), uint64(e.fwd), uint64(e.cout)|uint64(e.cin)<<32,
			kk|uint64(e.fwdCp)<<32, 0)
		pw.next = append(pw.next, uint64(e.src), uint64(e.bwd), uint64(e.cout)|uint64(e.cin)<<32,
			kk|uint64(e.bwdCp)<<32, 1)
	}
	if !slices.Equal(pw.next, pw.host) {
		if need := 8 * len(pw.next); need > pw.tableBytes {
			if pw.table != 0 {
				be.keep(op, be.d.Sync())
				be.keep(op, be.d.Free(pw.table))
				pw.table, pw.tableBytes = 0, 0
			}
			p, err := be.d.Alloc(need)
			if err != nil {
				panic(&ops.DeviceError{Op: fmt.Sprintf("cuda %s: a table of %d bytes", op, need), Err: err})
			}
			pw.table, pw.tableBytes = p, need
		}
		be.keep(op, Upload(be.d, pw.table, pw.next))
		pw.host = append(pw.host[:0], pw.next...)
	}
	// Blocks per entry: the average entry's size in blocks (at least 1, at most the largest's); larger entries loop.
	blocks := min(ceilDiv(elems, elementwiseThreads*2*len(ws)), ceilDiv(maxN, elementwiseThreads), elementwiseMaxBlocks)
	grid := Dim3{X: blocks, Y: 2 * len(ws)}
	args := []Arg{Ptr(pw.table), I32(int32(grid.Y)), I64(int64(wfloats)), I64(int64(elems))}
	name := "conv2d_pack_w_batch_bf16"
	if be.Precision() != ops.BF16 {
		name, args = "conv2d_pack_w_batch_f32", append(args, I32(be.convRound()))
	}
	be.keep(op, be.d.Launch(name, grid, Dim3{X: elementwiseThreads}, 0, args...))
	pw.prec = be.Precision()
	pw.valid = true
}

var _ ops.ConvWeightPacker = (*Backend)(nil)

// packedFor is the packed copy of w (forward layout, or flipped for backward-data) for shape s when the table
// holds w exactly (address, length, shape) and was packed at the current precision.
func (be *Backend) packedFor(w *Buf, s ops.ConvShape, flip bool) (DevicePtr, bool) {
	pw := &be.pw
	if !pw.valid || pw.prec != be.Precision() {
		return 0, false
	}
	for i := range pw.entries {
		e := &pw.entries[i]
		if e.src == w.p && e.n == w.n && e.cout == s.Cout && e.cin == s.Cin && e.k == s.K {
			if flip {
				return e.bwd, true
			}
			return e.fwd, true
		}
	}
	return 0, false
}

// wrote drops the packed weights when the n floats at p overlap one of their sources (a write through one of the
// backend's own paths: Upload, Copy, Fill, Free, AdamWStep, EMA, StepControl.Update, Buf.Ptr).
func (be *Backend) wrote(p DevicePtr, n int) {
	pw := &be.pw
	if !pw.valid {
		return
	}
	end := p + DevicePtr(4*max(n, 1))
	for i := range pw.entries {
		e := &pw.entries[i]
		if e.src < end && p < e.src+DevicePtr(4*e.n) {
			pw.valid = false
			return
		}
	}
}

// freePacked releases the packed weights and their table (Close).
func (be *Backend) freePacked() error {
	var err error
	for _, p := range []*DevicePtr{&be.pw.buf, &be.pw.table} {
		if *p != 0 {
			if e := be.d.Free(*p); err == nil {
				err = e
			}
			*p = 0
		}
	}
	be.pw = wpack{}
	return err
}
