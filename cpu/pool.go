package cpu

import (
	"runtime"
	"sync/atomic"
)

// runner is the work of one parallel op: run(worker, item) processes item ∈ [0, count)
// on goroutine worker ∈ [0, workers). Ops implement it with a pointer to a job struct
// that the backend owns (see jobs.go), so that handing work to the pool allocates
// nothing.
type runner interface {
	run(worker, item int)
}

// pool is a backend's persistent worker goroutines: workers−1 helpers parked on their
// wake channels plus the calling goroutine. Items are taken from a shared counter, so
// which goroutine runs which item varies, but no op lets that change a result: every
// item writes only memory of its own (or per-worker scratch that it overwrites), and
// every sum across items is combined afterwards in item order.
type pool struct {
	workers int
	wake    []chan struct{} // one per helper (goroutine k ≥ 1 waits on wake[k−1])
	done    chan struct{}
	job     runner
	count   int
	next    atomic.Int64
}

func newPool(workers int) *pool {
	p := &pool{workers: workers, wake: make([]chan struct{}, workers-1), done: make(chan struct{}, workers)}
	for k := 1; k < workers; k++ {
		p.wake[k-1] = make(chan struct{}, 1)
		go p.helper(k)
	}
	return p
}

// helper is goroutine k's loop; it ends when close stops the pool.
func (p *pool) helper(k int) {
	for range p.wake[k-1] {
		p.work(k)
		p.done <- struct{}{}
	}
}

func (p *pool) work(k int) {
	for {
		i := int(p.next.Add(1) - 1)
		if i >= p.count {
			return
		}
		p.job.run(k, i)
	}
}

// do runs j over count items on up to p.workers goroutines and returns when all are done.
func (p *pool) do(j runner, count int) {
	w := min(p.workers, count)
	if w <= 1 {
		for i := 0; i < count; i++ {
			j.run(0, i)
		}
		return
	}
	p.job, p.count = j, count
	p.next.Store(0)
	for k := 1; k < w; k++ {
		p.wake[k-1] <- struct{}{}
	}
	p.work(0)
	for k := 1; k < w; k++ {
		<-p.done
	}
	p.job = nil
}

// close ends the helpers.
func (p *pool) close() {
	for _, c := range p.wake {
		close(c)
	}
}

// run hands j to the backend's pool (made on first use, and again when a test changes
// be.workers); the pool's helpers end when the backend is garbage collected.
func (be *Backend[T]) run(j runner, count int) {
	if be.pool == nil || be.pool.workers != be.workers {
		if be.pool != nil {
			be.pool.close()
		}
		be.pool = newPool(be.workers)
		if be.cleanup != nil {
			be.cleanup.Stop()
		}
		c := runtime.AddCleanup(be, (*pool).close, be.pool)
		be.cleanup = &c
	}
	be.pool.do(j, count)
}
