package cpu

import "github.com/ddpmgo/ddpm/ops"

// jobKind names the parallel loop of an op (see job.run).
type jobKind int

const (
	jNone jobKind = iota
	jFill
	jAdd
	jAxpy
	jScale
	jSiLU
	jSiLUBwd
	jUpsample
	jUpsampleBwd
	jConcat
	jConcatBwd
	jAddChannel
	jChannelSum
	jTranspose
	jAdamW
	jEMA
	jSumSquares
	jMSE
	jMSEBwd
	jNormal64
	jDropout
	jDDIM
	jSamplerStep
	jConvDirect
	jConvFwd
	jConvBias
	jConvBwd
	jAddParts
	jTapWeights
	jConvShiftFwd
	jGroupNorm
	jGroupNormBwd
	jGroupNormSiLU
	jGroupNormSiLUGrad
	jAttention
	jAttentionBwd
)

// job is the one parallel op in flight: its kind, its operands and its split. Ops fill
// the backend's single job (newJob clears it first, so that nothing stale from the last
// op leaks in) and hand it to the pool; no closure is made, so a steady-state training
// step allocates nothing. A split job (split set) covers n elements (or rows) in parts
// contiguous ranges, item i being [i·n/parts, (i+1)·n/parts); other jobs treat the item
// as an index of their own (a sample, a panel, a chunk, a group, a (sample, head)).
type job[T Float] struct {
	be       *Backend[T]
	kind     jobKind
	split    bool
	n, parts int

	a    [6][]T     // operand slices
	c    [8]T       // scalar coefficients
	d    [8]float64 // float64 coefficients
	u    [2]uint64
	m    [3]int // integer parameters
	f    float32
	flag bool

	conv  ops.ConvShape
	norm  ops.NormShape
	attn  ops.AttnShape
	pl    panels
	grid  grid
	sets  [4][][]T // scratch sets: per-worker columns (or input grids) and panel buffers, weight-gradient partials, per-worker dx grids
	sums  [2][]float64
	first bool
}

// newJob clears the backend's job and sets its kind.
func (be *Backend[T]) newJob(kind jobKind) *job[T] {
	be.j = job[T]{be: be, kind: kind}
	return &be.j
}

// parallel runs the split job j over n elements, in one range on the calling goroutine
// below parallelMin elements (where waking a helper costs more than the op) and in one
// range per worker above. Only for ops whose every output element depends on its own
// index alone, so the split never changes a result.
func (be *Backend[T]) parallel(j *job[T], n int) {
	parts := be.workers
	if n < parallelMin {
		parts = 1
	}
	be.splitRows(j, n, parts)
}

// parallelRows is parallel over whole rows of rowLen elements (one contiguous range of
// rows per worker), for ops whose rows are independent.
func (be *Backend[T]) parallelRows(j *job[T], rows, rowLen int) {
	parts := min(be.workers, rows)
	if rows*rowLen < parallelMin {
		parts = 1
	}
	be.splitRows(j, rows, parts)
}

func (be *Backend[T]) splitRows(j *job[T], n, parts int) {
	j.split, j.n, j.parts = true, n, max(1, parts)
	if j.parts == 1 {
		j.run(0, 0)
		return
	}
	be.run(j, j.parts)
}

// forEach runs j's items [0, n) on up to be.workers goroutines. Which goroutine takes
// which item is not fixed: an item writes only memory of its own (or per-worker scratch
// that it overwrites).
func (be *Backend[T]) forEach(j *job[T], n int) {
	be.run(j, n)
}

// run is the pool's entry: item i of job j on goroutine wk.
func (j *job[T]) run(wk, i int) {
	lo, hi := i, i+1
	if j.split {
		lo, hi = i*j.n/j.parts, (i+1)*j.n/j.parts
	}
	switch j.kind {
	case jFill:
		fillRange(j, lo, hi)
	case jAdd:
		addRange(j, lo, hi)
	case jAxpy:
		axpyRange(j, lo, hi)
	case jScale:
		scaleRange(j, lo, hi)
	case jSiLU:
		siluRange(j, lo, hi)
	case jSiLUBwd:
		siluBwdRange(j, lo, hi)
	case jUpsample:
		upsampleRows(j, lo, hi)
	case jUpsampleBwd:
		upsampleBwdRows(j, lo, hi)
	case jConcat:
		concatRows(j, lo, hi)
	case jConcatBwd:
		concatBwdRows(j, lo, hi)
	case jAddChannel:
		addChannelRows(j, lo, hi)
	case jChannelSum:
		channelSumRows(j, lo, hi)
	case jTranspose:
		transposeRows(j, lo, hi)
	case jAdamW:
		adamWRange(j, lo, hi)
	case jEMA:
		emaRange(j, lo, hi)
	case jSumSquares, jMSE:
		reduceBlock1(j, i)
	case jMSEBwd:
		mseBwdRange(j, lo, hi)
	case jNormal64:
		normalRange(j, lo, hi)
	case jDropout:
		dropoutRange(j, lo, hi)
	case jDDIM:
		ddimRange(j, lo, hi)
	case jSamplerStep:
		samplerStepRange(j, lo, hi)
	case jConvDirect:
		convDirectItem(j, i)
	case jConvFwd:
		convFwdPanel(j, wk, i)
	case jConvBias:
		convBiasItem(j, i)
	case jConvBwd:
		convBwdChunk(j, wk, i)
	case jAddParts:
		addPartsRange(j, lo, hi)
	case jTapWeights:
		tapWeightsRows(j, lo, hi)
	case jConvShiftFwd:
		convShiftFwdGroup(j, wk, i)
	case jGroupNorm, jGroupNormSiLU:
		groupNormItem(j, i)
	case jGroupNormBwd, jGroupNormSiLUGrad:
		groupNormBwdItem(j, wk, i)
	case jAttention:
		attentionItem(j, wk, i)
	case jAttentionBwd:
		attentionBwdItem(j, wk, i)
	default:
		panic("cpu: job of unknown kind")
	}
}
