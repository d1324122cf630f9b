// Package nccl sums the trainer's gradients across GPUs with NVIDIA's NCCL: ncclCommInitRank with a unique id that
// rank 0 makes and MPI broadcasts, then ncclAllReduce (float32, sum) on the device buffers, so that nothing crosses
// to the host. The host-side collectives of the trainer (decisions, hashes, sample grids) stay on MPI.
//
// The collectives run on a communication stream of their own (a driver with cuda.Streams: the GPU), so that they
// overlap the backward pass, which goes on on the default stream: for each buffer, an event recorded on the
// default stream after the kernels that produced it (they were queued before the call) makes the communication
// stream wait, then the collective is queued there; Flush records an event on the communication stream after the
// last collective and makes the default stream wait for it, so that the kernels queued after Flush (the step
// controller's update, the next step's zeroing of the gradient) see the sums. Nothing waits on the host. On a
// driver without streams (the emulator of the default build) the collectives are queued on the default stream.
//
// NCCL is loaded at run time with dlopen("libnccl.so.2"): NVIDIA's CUDA images ship it (and NVIDIA's apt
// repository as libnccl2), Debian does not, and the binary must build and run without it. A watchdog goroutine
// polls ncclCommGetAsyncError once a second and aborts the communicator on an asynchronous error (a peer that
// died or a network failure), which frees a stream stuck in a collective; Flush returns the error.
//
// Device pointers are taken from cuda.Buf, so the package works on any cuda driver: a GPU (build tag cuda), and
// the CPU emulator of the default build, whose device memory is host memory. There a test double of NCCL's entry
// points written over MPI (testdata/fakenccl.c, built by `make test-mpi`) stands in for libnccl.so.2, so that the
// code that calls NCCL runs in CI without a GPU.
package nccl

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct { char internal[128]; } ddpm_ncclUniqueId;
typedef int ddpm_ncclResult;

typedef struct {
	void *lib;
	ddpm_ncclResult (*getVersion)(int *);
	ddpm_ncclResult (*getUniqueId)(ddpm_ncclUniqueId *);
	ddpm_ncclResult (*commInitRank)(void **, int, ddpm_ncclUniqueId, int);
	ddpm_ncclResult (*allReduce)(const void *, void *, size_t, int, int, void *, void *);
	ddpm_ncclResult (*broadcast)(const void *, void *, size_t, int, int, void *, void *);
	ddpm_ncclResult (*commGetAsyncError)(void *, ddpm_ncclResult *);
	ddpm_ncclResult (*commAbort)(void *);
	ddpm_ncclResult (*commDestroy)(void *);
	const char *(*getErrorString)(ddpm_ncclResult);
} ddpm_nccl;

// ddpm_nccl_open loads name and its entry points; it returns NULL or what went wrong.
static const char *ddpm_nccl_open(ddpm_nccl *n, const char *name) {
	n->lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
	if (!n->lib) return dlerror();
#define SYM(field, sym) if (!(*(void **)&n->field = dlsym(n->lib, sym))) return dlerror();
	SYM(getVersion, "ncclGetVersion")
	SYM(getUniqueId, "ncclGetUniqueId")
	SYM(commInitRank, "ncclCommInitRank")
	SYM(allReduce, "ncclAllReduce")
	SYM(broadcast, "ncclBroadcast")
	SYM(commGetAsyncError, "ncclCommGetAsyncError")
	SYM(commAbort, "ncclCommAbort")
	SYM(commDestroy, "ncclCommDestroy")
	SYM(getErrorString, "ncclGetErrorString")
#undef SYM
	return NULL;
}

enum { ddpm_ncclFloat32 = 7, ddpm_ncclSum = 0 };

static int ddpm_nccl_version(ddpm_nccl *n, int *v) { return n->getVersion(v); }
static int ddpm_nccl_id(ddpm_nccl *n, void *id) { return n->getUniqueId((ddpm_ncclUniqueId *)id); }
static int ddpm_nccl_init(ddpm_nccl *n, void **comm, int size, void *id, int rank) {
	return n->commInitRank(comm, size, *(ddpm_ncclUniqueId *)id, rank);
}
// p is a device address, stream a CUstream (0: the default stream).
static int ddpm_nccl_allreduce(ddpm_nccl *n, void *comm, uintptr_t p, size_t count, uintptr_t stream) {
	return n->allReduce((void *)p, (void *)p, count, ddpm_ncclFloat32, ddpm_ncclSum, comm, (void *)stream);
}
static int ddpm_nccl_bcast(ddpm_nccl *n, void *comm, uintptr_t p, size_t count, uintptr_t stream) {
	return n->broadcast((void *)p, (void *)p, count, ddpm_ncclFloat32, 0, comm, (void *)stream);
}
static int ddpm_nccl_async(ddpm_nccl *n, void *comm, int *res) { return n->commGetAsyncError(comm, res); }
static int ddpm_nccl_abort(ddpm_nccl *n, void *comm) { return n->commAbort(comm); }
static int ddpm_nccl_destroy(ddpm_nccl *n, void *comm) { return n->commDestroy(comm); }
static const char *ddpm_nccl_str(ddpm_nccl *n, int rc) { return n->getErrorString(rc); }
*/
import "C"

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/ddpmgo/ddpm/cuda"
	"github.com/ddpmgo/ddpm/ops"
)

// Library is the file dlopen loads.
const Library = "libnccl.so.2"

// Host is what NCCL needs of the host-side collective (package mpi's Comm): the ranks, the broadcast of the unique
// id, and the trainer's host collectives, which stay there.
type Host interface {
	Rank() int
	Size() int
	BroadcastBytes(b []byte) error
	MaxInt64(x []int64) error
	SumFloat32(x []float32) error
}

// Collective is the trainer's collective (train.Collective) with the device buffers on NCCL and the host values on
// Host.
type Collective struct {
	host    Host
	lib     *C.ddpm_nccl
	comm    unsafe.Pointer
	do      func(func() error) error // on the goroutine that owns the CUDA context
	err     error                    // the first error of a queued NCCL call
	async   atomic.Pointer[error]    // the watchdog's
	stop    chan struct{}
	wg      sync.WaitGroup
	version int
	mu      sync.Mutex // the communicator, against the watchdog's abort
	aborted bool

	// The communication stream (nil streams: none, everything on the default stream).
	drv     cuda.Driver
	streams cuda.Streams
	stream  cuda.Stream
	ready   cuda.Event // recorded on the default stream before each collective
	done    cuda.Event // recorded on the communication stream at Flush
	pending bool       // collectives queued since the last Flush
	drop    string     // DropWaitEnv
}

// DropWaitEnv names a wait to leave out, for the tests that show the emulated driver catches it
// (DDPM_EMU_STREAMS): "ready" (the communication stream does not wait for the kernels that produced a buffer) or
// "flush" (the default stream does not wait for the collectives). Never set it otherwise.
const DropWaitEnv = "DDPM_NCCL_DROP_WAIT"

// New loads NCCL and makes the communicator of host's ranks on be's GPU (each rank its own GPU; see
// cuda.OpenLocal). Every rank calls it at the same point.
func New(host Host, be *cuda.Backend) (*Collective, error) {
	c := &Collective{host: host, lib: (*C.ddpm_nccl)(C.calloc(1, C.size_t(unsafe.Sizeof(C.ddpm_nccl{})))), stop: make(chan struct{})}
	c.do = func(f func() error) error { return f() }
	if ctx, ok := be.Driver().(interface{ Do(func() error) error }); ok {
		c.do = ctx.Do
	}
	name := C.CString(Library)
	defer C.free(unsafe.Pointer(name))
	if msg := C.ddpm_nccl_open(c.lib, name); msg != nil {
		return nil, fmt.Errorf("nccl: cannot load %s: %s. NCCL comes with NVIDIA's CUDA images (nvidia/cuda:*-devel, "+
			"*-runtime) and as libnccl2 from NVIDIA's apt repository; Debian has no package. Put the library on "+
			"LD_LIBRARY_PATH, or use -collective mpi (gradients through the host)", Library, C.GoString(msg))
	}
	var v C.int
	if rc := C.ddpm_nccl_version(c.lib, &v); rc != 0 {
		return nil, c.fail("ncclGetVersion", rc)
	}
	c.version = int(v)
	id := make([]byte, 128)
	if host.Rank() == 0 {
		if rc := C.ddpm_nccl_id(c.lib, unsafe.Pointer(&id[0])); rc != 0 {
			return nil, c.fail("ncclGetUniqueId", rc)
		}
	}
	if err := host.BroadcastBytes(id); err != nil {
		return nil, fmt.Errorf("nccl: broadcasting the unique id: %w", err)
	}
	cid := C.CBytes(id)
	defer C.free(cid)
	var comm unsafe.Pointer
	err := c.do(func() error {
		if rc := C.ddpm_nccl_init(c.lib, &comm, C.int(host.Size()), cid, C.int(host.Rank())); rc != 0 {
			return c.fail("ncclCommInitRank", rc)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	c.comm = comm
	if st, ok := be.Driver().(cuda.Streams); ok {
		if err := c.openStream(be, st); err != nil {
			c.Close()
			return nil, err
		}
	}
	if d := os.Getenv(DropWaitEnv); d != "" {
		if d != "ready" && d != "flush" {
			c.Close()
			return nil, fmt.Errorf("nccl: %s=%q: want ready or flush", DropWaitEnv, d)
		}
		c.drop = d
	}
	c.wg.Add(1)
	go c.watchdog()
	return c, nil
}

// openStream makes the communication stream and its two events.
func (c *Collective) openStream(be *cuda.Backend, st cuda.Streams) error {
	s, err := st.NewStream()
	if err != nil {
		return fmt.Errorf("nccl: the communication stream: %w", err)
	}
	c.streams, c.stream = st, s
	c.drv = be.Driver()
	if c.ready, err = st.NewEvent(); err == nil {
		c.done, err = st.NewEvent()
	}
	if err != nil {
		return fmt.Errorf("nccl: the communication stream's events: %w", err)
	}
	return nil
}

// Version is NCCL's version code (ncclGetVersion: 21803 for 2.18.3).
func (c *Collective) Version() int { return c.version }

// Rank and Size are the host's.
func (c *Collective) Rank() int { return c.host.Rank() }
func (c *Collective) Size() int { return c.host.Size() }

// AllReduceSum queues ncclAllReduce (sum, in place) of buf on the communication stream, after the work queued on
// the default stream so far (which produced buf). The caller queues nothing that writes buf before Flush.
func (c *Collective) AllReduceSum(buf ops.Buf) { c.queue("ncclAllReduce", buf, false) }

// Broadcast queues ncclBroadcast of rank 0's buf, as AllReduceSum.
func (c *Collective) Broadcast(buf ops.Buf) { c.queue("ncclBroadcast", buf, true) }

func (c *Collective) queue(what string, buf ops.Buf, bcast bool) {
	if c.err != nil || buf.Len() == 0 {
		return
	}
	b, ok := buf.(*cuda.Buf)
	if !ok {
		c.err = fmt.Errorf("nccl: %s of a %T: NCCL sums device buffers (package cuda)", what, buf)
		return
	}
	p, n, stream := C.uintptr_t(b.Ptr()), C.size_t(buf.Len()), C.uintptr_t(c.stream)
	if c.streams != nil {
		// buf is final in queue order on the default stream: the communication stream waits for what was queued there.
		if c.err = c.streams.Record(c.ready, 0); c.err != nil {
			return
		}
		if c.drop != "ready" {
			if c.err = c.streams.Wait(c.stream, c.ready); c.err != nil {
				return
			}
		}
		c.pending = true
	}
	c.err = c.do(func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.aborted {
			return c.abortedErr()
		}
		var rc C.int
		if bcast {
			rc = C.ddpm_nccl_bcast(c.lib, c.comm, p, n, stream)
		} else {
			rc = C.ddpm_nccl_allreduce(c.lib, c.comm, p, n, stream)
		}
		if rc != 0 {
			return c.fail(fmt.Sprintf("%s of %d floats", what, buf.Len()), rc)
		}
		return nil
	})
}

// Flush makes the work queued on the default stream from now on wait for the queued collectives (an event recorded
// on the communication stream; the host does not wait), and returns the first error of the queued calls or NCCL's
// asynchronous error.
func (c *Collective) Flush() error {
	if c.err != nil {
		return c.err
	}
	if c.pending {
		c.pending = false
		if c.err = c.streams.Record(c.done, c.stream); c.err != nil {
			return c.err
		}
		if c.drop != "flush" {
			if c.err = c.streams.Wait(0, c.done); c.err != nil {
				return c.err
			}
		}
	}
	if e := c.async.Load(); e != nil {
		return *e
	}
	return c.checkAsync()
}

// MaxInt64 and SumFloat32 are the host's.
func (c *Collective) MaxInt64(x []int64) error     { return c.host.MaxInt64(x) }
func (c *Collective) SumFloat32(x []float32) error { return c.host.SumFloat32(x) }

// checkAsync asks NCCL for an asynchronous error; on one it aborts the communicator.
func (c *Collective) checkAsync() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.aborted {
		return c.abortedErr()
	}
	var res C.int
	if rc := C.ddpm_nccl_async(c.lib, c.comm, &res); rc != 0 {
		return c.fail("ncclCommGetAsyncError", rc)
	}
	if res == 0 || res == 7 { // ncclSuccess, ncclInProgress
		return nil
	}
	err := fmt.Errorf("nccl: asynchronous error on rank %d: %s (NCCL error %d); communicator aborted", c.host.Rank(), c.str(res), int(res))
	C.ddpm_nccl_abort(c.lib, c.comm)
	c.aborted = true
	c.async.Store(&err)
	return err
}

// abortedErr is the error of a call on an aborted communicator: the asynchronous error that aborted it when there
// was one (the watchdog may have found it before the step's own check did), so that the run names the cause.
func (c *Collective) abortedErr() error {
	if e := c.async.Load(); e != nil {
		return *e
	}
	return errors.New("nccl: the communicator was aborted")
}

func (c *Collective) watchdog() {
	defer c.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			if c.checkAsync() != nil {
				return
			}
		}
	}
}

// Close stops the watchdog and destroys the communicator, then the communication stream and its events.
func (c *Collective) Close() error {
	close(c.stop)
	c.wg.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.aborted {
		return nil
	}
	c.aborted = true
	var err error
	if c.streams != nil {
		err = c.drv.Sync() // the queued collectives finish before their communicator goes
	}
	err = errors.Join(err, c.do(func() error {
		if rc := C.ddpm_nccl_destroy(c.lib, c.comm); rc != 0 {
			return c.fail("ncclCommDestroy", rc)
		}
		return nil
	}))
	if c.streams != nil {
		errs := []error{err}
		for _, e := range []cuda.Event{c.ready, c.done} {
			if e != 0 {
				errs = append(errs, c.streams.DestroyEvent(e))
			}
		}
		errs = append(errs, c.streams.DestroyStream(c.stream))
		err = errors.Join(errs...)
	}
	return err
}

func (c *Collective) str(rc C.int) string { return C.GoString(C.ddpm_nccl_str(c.lib, rc)) }

func (c *Collective) fail(what string, rc C.int) error {
	return fmt.Errorf("nccl: %s on rank %d: %s (NCCL error %d)", what, c.host.Rank(), c.str(rc), int(rc))
}
