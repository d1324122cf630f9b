//go:build mpi

package mpi

/*
#cgo pkg-config: ompi-c
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct {
	MPI_Comm data, ctl;  // duplicates of MPI_COMM_WORLD: the collectives, and the watchdog's probes
	int rank, size, lrank, lsize, provided;
} ddpm_mpi;

static int ddpm_init(ddpm_mpi *m) {
	int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_MULTIPLE, &m->provided);
	if (rc != MPI_SUCCESS) return rc;
	MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
	if ((rc = MPI_Comm_dup(MPI_COMM_WORLD, &m->data)) != MPI_SUCCESS) return rc;
	if ((rc = MPI_Comm_dup(MPI_COMM_WORLD, &m->ctl)) != MPI_SUCCESS) return rc;
	MPI_Comm_set_errhandler(m->data, MPI_ERRORS_RETURN);
	MPI_Comm_set_errhandler(m->ctl, MPI_ERRORS_RETURN);
	MPI_Comm local;
	if ((rc = MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local)) != MPI_SUCCESS) return rc;
	MPI_Comm_rank(MPI_COMM_WORLD, &m->rank);
	MPI_Comm_size(MPI_COMM_WORLD, &m->size);
	MPI_Comm_rank(local, &m->lrank);
	MPI_Comm_size(local, &m->lsize);
	MPI_Comm_free(&local);
	return MPI_SUCCESS;
}

static void ddpm_errstr(int rc, char *buf, int n) {
	char s[MPI_MAX_ERROR_STRING];
	int len = 0;
	if (MPI_Error_string(rc, s, &len) != MPI_SUCCESS) len = 0;
	s[len < MPI_MAX_ERROR_STRING ? len : MPI_MAX_ERROR_STRING - 1] = 0;
	snprintf(buf, n, "%s (MPI error %d)", s, rc);
}

static int ddpm_test(MPI_Request *r, int *flag) { return MPI_Test(r, flag, MPI_STATUS_IGNORE); }

static int ddpm_ialltoallv(ddpm_mpi *m, float *x, int *sc, int *sd, float *recv, int *rcnt, int *rd, MPI_Request *r) {
	return MPI_Ialltoallv(x, sc, sd, MPI_FLOAT, recv, rcnt, rd, MPI_FLOAT, m->data, r);
}

static int ddpm_iallgatherv(ddpm_mpi *m, float *x, int *counts, int *displs, MPI_Request *r) {
	return MPI_Iallgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, x, counts, displs, MPI_FLOAT, m->data, r);
}

static int ddpm_iallgather(ddpm_mpi *m, float *x, int n, float *recv, MPI_Request *r) {
	return MPI_Iallgather(x, n, MPI_FLOAT, recv, n, MPI_FLOAT, m->data, r);
}

static int ddpm_imax(ddpm_mpi *m, int64_t *x, int n, MPI_Request *r) {
	return MPI_Iallreduce(MPI_IN_PLACE, x, n, MPI_INT64_T, MPI_MAX, m->data, r);
}

static int ddpm_ibcast(ddpm_mpi *m, void *x, int bytes, MPI_Request *r) {
	return MPI_Ibcast(x, bytes, MPI_BYTE, 0, m->data, r);
}

static int ddpm_iprobe(ddpm_mpi *m, int tag, int *flag, int *src) {
	MPI_Status st;
	int rc = MPI_Iprobe(MPI_ANY_SOURCE, tag, m->ctl, flag, &st);
	if (rc == MPI_SUCCESS && *flag) *src = st.MPI_SOURCE;
	return rc;
}

static int ddpm_recv(ddpm_mpi *m, int64_t *x, int n, int src, int tag) {
	return MPI_Recv(x, n, MPI_INT64_T, src, tag, m->ctl, MPI_STATUS_IGNORE);
}

static int ddpm_send(ddpm_mpi *m, int64_t *x, int n, int dst, int tag) {
	return MPI_Send(x, n, MPI_INT64_T, dst, tag, m->ctl);
}

static int ddpm_abort(int code) { return MPI_Abort(MPI_COMM_WORLD, code); }

static int ddpm_finalize(ddpm_mpi *m) {
	MPI_Comm_free(&m->data);
	MPI_Comm_free(&m->ctl);
	return MPI_Finalize();
}
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"time"
	"unsafe"

	"github.com/ddpmgo/ddpm/cpu"
	"github.com/ddpmgo/ddpm/ops"
)

// Options configure a Comm.
type Options struct {
	// Timeout is the watchdog's limit on one collective: from when this rank enters it to when it completes
	// (0: 10 minutes). It must exceed the longest time one rank may spend between collectives while the others
	// wait: loading the data set at the start, a checkpoint write on rank 0.
	Timeout time.Duration
}

// DefaultTimeout is the watchdog's limit when Options.Timeout is 0.
const DefaultTimeout = 10 * time.Minute

// Tags of the watchdog's messages on the probe communicator.
const (
	tagProbe = 1
	tagReply = 2
)

// smallPerRank: sums of at most this many floats per rank are gathered whole and added up on every rank (one
// round trip), larger ones are cut into chunks (two).
const smallPerRank = 64

// Operations queued to the MPI goroutine.
const (
	opSum = iota
	opBcast
	opMax
	opBytes
	opFlush
	opStop
)

type op struct {
	kind  int
	f32   []float32
	i64   []int64
	b     []byte
	reply chan error // nil: queued (AllReduceSum, Broadcast), its error kept for Flush
}

type stage struct {
	buf ops.Buf
	x   []float32
}

// Comm is this process's place among the ranks, and the trainer's collective over MPI (train.Collective): the
// methods up to Flush are called by the trainer's goroutine only; every MPI call is made by the MPI goroutine.
type Comm struct {
	m                        *C.ddpm_mpi
	rank, size, lrank, lsize int
	multiple                 bool
	timeout, probeWait       time.Duration
	work                     chan *op
	stopped                  chan error

	// The trainer's side.
	be       ops.Backend
	pin      runtime.Pinner // buffers of queued collectives, until Flush
	hostPin  runtime.Pinner // the buffer of a blocking collective, during it
	staged   []stage        // device buffers copied to the host for a queued collective, copied back at Flush
	arena    []float32      // host copies of staged buffers
	used     int
	flushed  chan error
	finished bool

	// The MPI goroutine's side.
	err                              error // the first error: every later collective fails with it
	seq                              int64 // collectives started
	inOp                             bool
	lastDone                         time.Time
	scratch                          unsafe.Pointer // C floats
	scratchN                         int
	counts, displs, rcounts, rdispls *C.int // C arrays of size, for the non-blocking v-collectives
}

// Init initialises MPI (MPI_Init_thread on a goroutine locked to its OS thread, MPI_THREAD_MULTIPLE requested)
// and returns the Comm of MPI_COMM_WORLD. Call it once per process, in a process that Launched.
func Init(opt Options) (*Comm, error) {
	c := &Comm{timeout: opt.Timeout, work: make(chan *op, 256), stopped: make(chan error, 1), flushed: make(chan error, 1)}
	if c.timeout <= 0 {
		c.timeout = DefaultTimeout
	}
	c.probeWait = min(5*time.Second, c.timeout/2)
	ready := make(chan error)
	go c.loop(ready)
	if err := <-ready; err != nil {
		return nil, err
	}
	return c, nil
}

// Rank is this process's rank in MPI_COMM_WORLD.
func (c *Comm) Rank() int { return c.rank }

// Size is the number of ranks.
func (c *Comm) Size() int { return c.size }

// LocalRank is this process's rank among those on its machine (MPI_Comm_split_type, MPI_COMM_TYPE_SHARED): it picks
// the GPU of a process.
func (c *Comm) LocalRank() int { return c.lrank }

// LocalSize is the number of ranks on this machine.
func (c *Comm) LocalSize() int { return c.lsize }

// ThreadMultiple says whether MPI granted MPI_THREAD_MULTIPLE (then libraries may call MPI from other threads, as
// the NCCL test double does).
func (c *Comm) ThreadMultiple() bool { return c.multiple }

// Bind makes be the backend of the buffers that AllReduceSum and Broadcast receive. Buffers of the float32 CPU
// backend are reduced in place; others (the emulator, a GPU without NCCL) are copied to the host and back.
func (c *Comm) Bind(be ops.Backend) { c.be = be }

// Abort ends every rank at once (MPI_Abort on MPI_COMM_WORLD): mpirun kills them and exits with a non-zero status.
func (c *Comm) Abort(code int) { C.ddpm_abort(C.int(code)) }

// Close finalises MPI after the queued collectives; the Comm must not be used afterwards.
func (c *Comm) Close() error {
	if c.finished {
		return nil
	}
	c.finished = true
	c.work <- &op{kind: opStop}
	return <-c.stopped
}

// AllReduceSum queues the sum of buf over the ranks (see the package doc: the same bits everywhere).
func (c *Comm) AllReduceSum(buf ops.Buf) { c.queue(opSum, buf) }

// Broadcast queues replacing buf by rank 0's.
func (c *Comm) Broadcast(buf ops.Buf) { c.queue(opBcast, buf) }

func (c *Comm) queue(kind int, buf ops.Buf) {
	if buf.Len() == 0 {
		return
	}
	var x []float32
	if hb, ok := buf.(*cpu.Buf[float32]); ok {
		x = cpu.Data[float32](hb)
	} else {
		if c.be == nil {
			panic(fmt.Sprintf("mpi: a %T buffer and no backend (Bind)", buf))
		}
		if len(c.arena)-c.used < buf.Len() {
			c.arena, c.used = make([]float32, max(2*len(c.arena), buf.Len())), 0 // staged slices keep the old one
		}
		x = c.arena[c.used : c.used+buf.Len()]
		c.used += buf.Len()
		c.be.Download(x, buf)
		c.staged = append(c.staged, stage{buf, x})
	}
	c.pin.Pin(&x[0])
	c.work <- &op{kind: kind, f32: x}
}

// Flush waits for the queued collectives and returns the first error.
func (c *Comm) Flush() error {
	c.work <- &op{kind: opFlush, reply: c.flushed}
	err := <-c.flushed
	c.pin.Unpin()
	for _, s := range c.staged {
		if err == nil {
			c.be.Upload(s.buf, s.x)
		}
	}
	c.staged, c.used = c.staged[:0], 0
	return err
}

// MaxInt64 replaces each x[i] by its maximum over the ranks.
func (c *Comm) MaxInt64(x []int64) error {
	if len(x) == 0 {
		return nil
	}
	c.hostPin.Pin(&x[0])
	defer c.hostPin.Unpin()
	return c.call(&op{kind: opMax, i64: x})
}

// SumFloat32 replaces each x[i] by its sum over the ranks, in rank order.
func (c *Comm) SumFloat32(x []float32) error {
	if len(x) == 0 {
		return nil
	}
	c.hostPin.Pin(&x[0])
	defer c.hostPin.Unpin()
	return c.call(&op{kind: opSum, f32: x})
}

// BroadcastBytes replaces b by rank 0's b (of the same length on every rank).
func (c *Comm) BroadcastBytes(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	c.hostPin.Pin(&b[0])
	defer c.hostPin.Unpin()
	return c.call(&op{kind: opBytes, b: b})
}

// call runs a blocking collective after the queued ones.
func (c *Comm) call(o *op) error {
	o.reply = make(chan error, 1)
	c.work <- o
	return <-o.reply
}

// ---- the MPI goroutine ---------------------------------------------------------------------------------------------

func (c *Comm) loop(ready chan<- error) {
	runtime.LockOSThread() // for good: MPI belongs to the thread that initialised it
	c.m = (*C.ddpm_mpi)(C.calloc(1, C.size_t(unsafe.Sizeof(C.ddpm_mpi{}))))
	if rc := C.ddpm_init(c.m); rc != 0 {
		ready <- c.mpiErr("MPI_Init_thread", rc)
		return
	}
	c.rank, c.size, c.lrank, c.lsize = int(c.m.rank), int(c.m.size), int(c.m.lrank), int(c.m.lsize)
	c.multiple = c.m.provided == C.MPI_THREAD_MULTIPLE
	n := C.size_t(c.size) * C.size_t(unsafe.Sizeof(C.int(0)))
	c.counts, c.displs = (*C.int)(C.malloc(n)), (*C.int)(C.malloc(n))
	c.rcounts, c.rdispls = (*C.int)(C.malloc(n)), (*C.int)(C.malloc(n))
	c.lastDone = time.Now()
	ready <- nil
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case o := <-c.work:
			if o.kind == opStop {
				var err error
				if rc := C.ddpm_finalize(c.m); rc != 0 {
					err = c.mpiErr("MPI_Finalize", rc)
				}
				c.stopped <- errors.Join(c.err, err)
				return
			}
			c.run(o)
		case <-tick.C:
			c.serveProbes() // the trainer computes: answer the watchdogs of ranks waiting for it
		}
	}
}

func (c *Comm) run(o *op) {
	if o.kind == opFlush {
		o.reply <- c.err
		return
	}
	if c.err != nil {
		if o.reply != nil {
			o.reply <- c.err
		}
		return
	}
	c.seq++
	c.inOp = true
	var err error
	switch o.kind {
	case opSum:
		err = c.sum(o.f32)
	case opBcast:
		err = c.bcast(unsafe.Pointer(&o.f32[0]), 4*len(o.f32), fmt.Sprintf("broadcast of %d floats", len(o.f32)))
	case opBytes:
		err = c.bcast(unsafe.Pointer(&o.b[0]), len(o.b), fmt.Sprintf("broadcast of %d bytes", len(o.b)))
	case opMax:
		var req C.MPI_Request
		what := fmt.Sprintf("max of %d integers", len(o.i64))
		if rc := C.ddpm_imax(c.m, (*C.int64_t)(unsafe.Pointer(&o.i64[0])), C.int(len(o.i64)), &req); rc != 0 {
			err = c.mpiErr(what, rc)
		} else {
			err = c.wait(&req, what)
		}
	}
	c.inOp, c.lastDone = false, time.Now()
	if err != nil && c.err == nil {
		c.err = err
	}
	if o.reply != nil {
		o.reply <- err
	}
}

// sum replaces x by its sum over the ranks, added in rank order (see the package doc).
func (c *Comm) sum(x []float32) error {
	n, N, me := len(x), c.size, c.rank
	what := fmt.Sprintf("all-reduce of %d floats", n)
	xp := (*C.float)(unsafe.Pointer(&x[0]))
	var req C.MPI_Request
	if n <= smallPerRank*N {
		all := c.scratchFloats(N * n)
		if rc := C.ddpm_iallgather(c.m, xp, C.int(n), (*C.float)(c.scratch), &req); rc != 0 {
			return c.mpiErr(what, rc)
		}
		if err := c.wait(&req, what); err != nil {
			return err
		}
		for i := range x {
			s := all[i]
			for r := 1; r < N; r++ {
				s += all[r*n+i]
			}
			x[i] = s
		}
		return nil
	}
	counts, displs := unsafe.Slice(c.counts, N), unsafe.Slice(c.displs, N)
	rcounts, rdispls := unsafe.Slice(c.rcounts, N), unsafe.Slice(c.rdispls, N)
	chunk := (n + N - 1) / N
	for j := range N {
		lo := min(j*chunk, n)
		counts[j], displs[j] = C.int(min(n-lo, chunk)), C.int(lo)
	}
	mine := int(counts[me])
	for j := range N {
		rcounts[j], rdispls[j] = C.int(mine), C.int(j*mine)
	}
	parts := c.scratchFloats(N * mine)
	if rc := C.ddpm_ialltoallv(c.m, xp, c.counts, c.displs, (*C.float)(c.scratch), c.rcounts, c.rdispls, &req); rc != 0 {
		return c.mpiErr(what, rc)
	}
	if err := c.wait(&req, what); err != nil {
		return err
	}
	own := x[int(displs[me]) : int(displs[me])+mine]
	for i := range own {
		s := parts[i]
		for r := 1; r < N; r++ {
			s += parts[r*mine+i]
		}
		own[i] = s
	}
	if rc := C.ddpm_iallgatherv(c.m, xp, c.counts, c.displs, &req); rc != 0 {
		return c.mpiErr(what, rc)
	}
	return c.wait(&req, what)
}

func (c *Comm) bcast(p unsafe.Pointer, bytes int, what string) error {
	var req C.MPI_Request
	if rc := C.ddpm_ibcast(c.m, p, C.int(bytes), &req); rc != 0 {
		return c.mpiErr(what, rc)
	}
	return c.wait(&req, what)
}

// scratchFloats is n floats of C memory (grown, never shrunk).
func (c *Comm) scratchFloats(n int) []float32 {
	if n > c.scratchN {
		C.free(c.scratch)
		c.scratch, c.scratchN = C.malloc(C.size_t(4*max(n, 1))), n
	}
	return unsafe.Slice((*float32)(c.scratch), max(n, 1))[:n]
}

// wait polls req until it completes, answering probes meanwhile; past the timeout it asks the other ranks where
// they are and returns an error naming those that hold the collective up.
func (c *Comm) wait(req *C.MPI_Request, what string) error {
	start := time.Now()
	for i := 0; ; i++ {
		var flag C.int
		if rc := C.ddpm_test(req, &flag); rc != 0 {
			return c.mpiErr(what, rc)
		}
		if flag != 0 {
			return nil
		}
		if i%64 == 63 {
			c.serveProbes()
		}
		if el := time.Since(start); el > c.timeout {
			return c.diagnose(what, el)
		}
		if i > 200 { // spin briefly (the partner is usually there), then back off to 1 ms: ranks may share cores
			time.Sleep(min(time.Duration(i-200)*10*time.Microsecond, time.Millisecond))
		}
	}
}

// serveProbes answers the watchdog probes of other ranks: this rank's collective count, whether it is inside one
// and for how long its trainer has not started one.
func (c *Comm) serveProbes() {
	for {
		var flag, src C.int
		if C.ddpm_iprobe(c.m, tagProbe, &flag, &src) != 0 || flag == 0 {
			return
		}
		var in [2]int64
		C.ddpm_recv(c.m, (*C.int64_t)(unsafe.Pointer(&in[0])), 2, src, tagProbe)
		busy := int64(0)
		if c.inOp {
			busy = 1
		}
		out := [3]int64{c.seq, busy, time.Since(c.lastDone).Milliseconds()}
		C.ddpm_send(c.m, (*C.int64_t)(unsafe.Pointer(&out[0])), 3, src, tagReply)
	}
}

// diagnose asks every other rank where it is and builds the watchdog's error.
func (c *Comm) diagnose(what string, waited time.Duration) error {
	probe := [2]int64{c.seq, 0}
	for p := range c.size {
		if p != c.rank {
			C.ddpm_send(c.m, (*C.int64_t)(unsafe.Pointer(&probe[0])), 2, C.int(p), tagProbe)
		}
	}
	answers := map[int][3]int64{}
	deadline := time.Now().Add(c.probeWait)
	for len(answers) < c.size-1 && time.Now().Before(deadline) {
		c.serveProbes()
		var flag, src C.int
		if C.ddpm_iprobe(c.m, tagReply, &flag, &src) == 0 && flag != 0 {
			var a [3]int64
			C.ddpm_recv(c.m, (*C.int64_t)(unsafe.Pointer(&a[0])), 3, src, tagReply)
			answers[int(src)] = a
			continue
		}
		time.Sleep(10 * time.Millisecond)
	}
	var parts []string
	waiting := 0
	for p := range c.size {
		if p == c.rank {
			continue
		}
		a, ok := answers[p]
		switch {
		case !ok:
			parts = append(parts, fmt.Sprintf("rank %d does not answer (hung, stopped or dead)", p))
		case a[0] < c.seq || a[0] == c.seq && a[1] == 0:
			parts = append(parts, fmt.Sprintf("rank %d answers but has not reached it (it is at collective #%d, %.1f s after its last one ended)",
				p, a[0], float64(a[2])/1e3))
		default:
			waiting++
		}
	}
	if waiting > 0 {
		parts = append(parts, fmt.Sprintf("%d other rank(s) wait in it too", waiting))
	}
	return fmt.Errorf("mpi: watchdog: %s (collective #%d) did not complete within %v on rank %d: %s",
		what, c.seq, waited.Round(time.Second), c.rank, strings.Join(parts, "; "))
}

func (c *Comm) mpiErr(what string, rc C.int) error {
	var buf [512]C.char
	C.ddpm_errstr(rc, &buf[0], C.int(len(buf)))
	return fmt.Errorf("mpi: %s on rank %d: %s", what, c.rank, C.GoString(&buf[0]))
}
