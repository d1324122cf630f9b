package train

import (
	"fmt"
	"hash/crc32"
	"math"
	"strings"
	"unsafe"

	"github.com/ddpmgo/ddpm/ops"
)

// Collective is the group of processes ("ranks") that train one run together, data-parallel: every rank holds the
// whole model and takes its shard of each global batch, and the collective sums their gradients. The trainer
// calls the same collectives in the same order on every rank. Implementations: Single (one process, the default),
// package mpi (Open MPI, build tag mpi) and, for gradients on GPUs, package cuda/nccl over it.
//
// Errors name the operation and, where the implementation can tell, the rank that failed or did not answer; an
// implementation may give up on a collective that does not complete in bounded time (a watchdog) and return an
// error rather than wait for ever.
type Collective interface {
	// Rank is this process's index in the group, 0 … Size()−1; rank 0 writes the run's outputs.
	Rank() int
	// Size is the number of ranks.
	Size() int

	// AllReduceSum queues replacing buf (a buffer of the trainer's backend) by its elementwise sum over the ranks,
	// bit-identical on every rank and the same from run to run (the sum is formed in a fixed order); the caller
	// must not touch buf until Flush. It may start at once, while the caller goes on with other work.
	AllReduceSum(buf ops.Buf)
	// Broadcast queues replacing buf by rank 0's buf, as AllReduceSum.
	Broadcast(buf ops.Buf)
	// Flush waits for the queued AllReduceSum and Broadcast (on a device: queues them before the work launched
	// after it) and returns the first error.
	Flush() error

	// MaxInt64 replaces each x[i] by its maximum over the ranks (host values: decisions, flags, hashes).
	MaxInt64(x []int64) error
	// SumFloat32 replaces each x[i] by its sum over the ranks, in rank order (host values).
	SumFloat32(x []float32) error
}

// Single is the group of one process: every collective leaves its data as it is.
type Single struct{}

func (Single) Rank() int                  { return 0 }
func (Single) Size() int                  { return 1 }
func (Single) AllReduceSum(ops.Buf)       {}
func (Single) Broadcast(ops.Buf)          {}
func (Single) Flush() error               { return nil }
func (Single) MaxInt64([]int64) error     { return nil }
func (Single) SumFloat32([]float32) error { return nil }

// bucketElems is the default size of the gradient ranges reduced while the backward pass goes on (4 MiB of float32,
// Options.BucketElems): big enough that a collective's latency does not dominate, small enough to start early. (A
// variable for the tests.)
var bucketElems = 1 << 20

// shard is this rank's part of every global batch: samples first … first+n−1 of B.
func shardOf(B, rank, size int) (first, n int, err error) {
	if B%size != 0 {
		return 0, 0, fmt.Errorf("train: train.batch_size = %d does not divide among %d ranks (the global batch is split evenly; choose a multiple of %d)", B, size, size)
	}
	n = B / size
	return rank * n, n, nil
}

// gradsReady is the model's OnGradsReady hook during the last micro-batch's backward pass: it queues the final
// gradients above from for reduction whenever a bucket's worth has accumulated. "Final" is in queue order: the
// kernels that wrote them were launched, and the kernels launched later (the rest of the backward pass) write only
// below from (each parameter's gradient is written by its own layer's backward, model.OnGradsReady), so on a
// device the collective may run beside them (package cuda/nccl: on a stream of its own, after an event recorded
// here). Nothing touches the queued ranges again until Flush (reduce), after which the step controller's update
// and the next step's zeroing of the gradient are queued.
func (tr *trainer) gradsReady(from int) {
	if !tr.reducing || tr.sent-from < tr.bucket && from > 0 {
		return
	}
	tr.col.AllReduceSum(tr.be.Slice(tr.unet.Grads(), from, tr.sent-from))
	tr.sent = from
}

// reduce ends the micro-batches of a step on several ranks: the rest of the gradient is queued (most of it went
// during the backward pass, gradsReady), the A micro-batch losses are summed, and after the reductions the losses
// are scaled by 1/N, so that every rank's step controller sees the global batch's mean loss and gradient. (The
// gradient needs no scaling: each rank's loss gradient was scaled by 1/N, MSEBackward.)
func (tr *trainer) reduce() error {
	tr.reducing = false
	if tr.sent > 0 {
		tr.col.AllReduceSum(tr.be.Slice(tr.unet.Grads(), 0, tr.sent))
	}
	for k := 0; k < tr.A; k++ {
		tr.col.AllReduceSum(tr.ctl.Loss(k))
	}
	if err := tr.col.Flush(); err != nil {
		return fmt.Errorf("train: step %d: gradient all-reduce over %d ranks: %w", tr.st.Step+1, tr.ranks, err)
	}
	for k := 0; k < tr.A; k++ {
		tr.be.Scale(1/float32(tr.ranks), tr.ctl.Loss(k))
	}
	return nil
}

// agree makes a decision of rank 0 everyone's: err is rank 0's outcome of writing an output (nil on the other
// ranks, which write nothing), after the write-failure policy; when it is an error, every rank returns one, so
// that a run stopped by rank 0 (train.on_write_error = "stop", a failed final checkpoint) stops everywhere.
func (tr *trainer) agree(err error) error { return tr.agreeFlags(err, nil) }

// agreeFlags is agree that also makes rank 0's flags (values ≥ 0) every rank's, in place.
func (tr *trainer) agreeFlags(err error, flags []int64) error {
	if tr.ranks == 1 {
		return err
	}
	v := append([]int64{0}, flags...)
	if tr.rank != 0 {
		clear(v)
	}
	if err != nil {
		v[0] = 1
	}
	if cerr := tr.col.MaxInt64(v); cerr != nil {
		if err != nil {
			return fmt.Errorf("%w (and telling the other ranks failed: %v)", err, cerr)
		}
		return fmt.Errorf("train: step %d: agreeing on rank 0's outputs: %w", tr.st.Step, cerr)
	}
	copy(flags, v[1:])
	if err != nil {
		return err
	}
	if v[0] != 0 {
		return fmt.Errorf("train: step %d: rank 0 stopped the run on a failed write (its log names the file and the cause)", tr.st.Step)
	}
	return nil
}

// onRank0 runs write on rank 0 only and makes its outcome every rank's (agree).
func (tr *trainer) onRank0(write func() error) error {
	var err error
	if tr.rank == 0 {
		err = write()
	}
	return tr.agree(err)
}

// stopCodes are the stop reasons in the order in which the ranks' agreement prefers them (the largest wins).
var stopCodes = []string{"", "max_steps", "epochs", "max_minutes", "interrupted"}

// agreedStop is stopReason agreed over the ranks: the time budget and signals are seen by each rank at its own
// moment, so the ranks take the largest of their reasons, and stop after the same step.
func (tr *trainer) agreedStop(reason string) (string, error) {
	if tr.ranks == 1 {
		return reason, nil
	}
	code := []int64{0}
	for i, s := range stopCodes {
		if s == reason {
			code[0] = int64(i)
		}
	}
	if err := tr.col.MaxInt64(code); err != nil {
		return "", fmt.Errorf("train: after step %d: agreeing on whether to stop: %w", tr.st.Step, err)
	}
	return stopCodes[code[0]], nil
}

// checkSame compares a hash of every rank's weights and EMA (CRC-32C of their bytes) and returns an error naming the
// ranks whose state differs from rank 0's: data-parallel ranks must hold the same bits after every step. It runs at
// every log step and before every checkpoint, and after a resume.
func (tr *trainer) checkSame(when string) error {
	if tr.ranks == 1 {
		return nil
	}
	h := crc32.New(crc32.MakeTable(crc32.Castagnoli))
	for _, b := range []ops.Buf{tr.unet.Params(), tr.ema} {
		tr.be.Download(tr.hashBuf, b)
		h.Write(unsafe.Slice((*byte)(unsafe.Pointer(&tr.hashBuf[0])), 4*len(tr.hashBuf)))
	}
	if err := tr.be.Sync(); err != nil {
		return fmt.Errorf("train: %s: %w", when, err)
	}
	hs := tr.hashes
	clear(hs)
	hs[tr.rank] = int64(h.Sum32())
	if err := tr.col.MaxInt64(hs); err != nil {
		return fmt.Errorf("train: %s: comparing the ranks' weights: %w", when, err)
	}
	var differ []string
	for r, v := range hs {
		if v != hs[0] {
			differ = append(differ, fmt.Sprintf("rank %d (%08x)", r, v))
		}
	}
	if len(differ) > 0 {
		return fmt.Errorf("train: %s: the ranks' weights diverged: %s differ from rank 0 (%08x); the data-parallel "+
			"ranks must compute bit-identical updates (same binary, backend and settings on every rank). The last good "+
			"checkpoint is %s", when, strings.Join(differ, ", "), hs[0], tr.out.lastGood())
	}
	return nil
}

// sampleShare is the part of the n sample images rank draws: images [n·rank/size, n·(rank+1)/size).
func sampleShare(n, rank, size int) (from, to int) {
	return n * rank / size, n * (rank + 1) / size
}

// mean1 is 1/N as the factor of the loss gradient: exact for N a power of two.
func mean1(n int) float32 { return float32(1 / math.Max(1, float64(n))) }
