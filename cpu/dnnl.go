//go:build cgo

package cpu

// Convolution on the float32 backend goes to oneDNN (Debian libdnnl-dev 2.6), the
// library PyTorch's own CPU convolutions run on: its JIT kernels work on channel-blocked
// layouts (nChw16c) with AVX-512 micro-kernels, ~220–240 GFLOP/s on two cores for the
// U-Net's 3×3 layers, and cut the celeba32 step's convolution time by ~30% against the
// im2col/shifted GEMMs on OpenBLAS (docs/perf.md, round 3). The float64 backend
// (gradient checks, conformance reference) keeps the GEMM code of conv.go.
//
// The primitives run in oneDNN's user scratchpad mode: in library mode the scratchpad
// is a per-OS-thread buffer sized when a primitive is created, and a goroutine may
// execute on another thread than the one that created the primitive (that crashed).
//
// Per ConvShape, a plan (dnnl.c) holds the forward, backward-data and backward-weights
// primitives (prop_kind forward_training, layouts chosen by oneDNN: format_tag any)
// and the reorders between them and the backend's NCHW / OIHW buffers, created on the
// shape's first use and kept; the reorders' blocked-layout buffers are one workspace
// shared by all plans (calls are serialised: dnnlMu). The backward ops
// accumulate: dx, dw and db are reorders from the primitive's output with a sum
// post-op (dst = 1·dst + src, one IEEE addition per element).
//
// Threading: oneDNN's CPU runtime in Debian's build is OpenMP (libgomp). It runs on
// the calling goroutine's thread with dnnlThreads threads (GOMAXPROCS at New, set with
// omp_set_num_threads before every call, and before a primitive is created, which fixes
// its thread decomposition then, because the OpenMP setting is per OS thread and
// goroutines move between threads); the backend's own worker pool is idle
// meanwhile. oneDNN's kernels partition work by thread count only, so results are
// bit-identical run to run for a fixed GOMAXPROCS (TestDNNLConvMatchesGEMMPath checks
// a second backend); the backend's worker count (Backend.workers) does not enter, so
// TestDeterministicAcrossWorkers holds unchanged. Across GOMAXPROCS values the
// backward-weight sums may differ in the last bits.

/*
#cgo CFLAGS: -fopenmp
#cgo LDFLAGS: -ldnnl -lgomp
#include <stdlib.h>
#include <omp.h>
#include "dnnl_conv.h"
#include "dnnl_layout.h"
*/
import "C"

import (
	"fmt"
	"runtime"
	"sync"
	"unsafe"

	"github.com/ddpmgo/ddpm/ops"
)

// dnnlState is a float32 backend's oneDNN convolution plans.
type dnnlState struct {
	threads int
	bf16    bool // new plans take bf16 inputs (precision bf16, see bf16.go)
	plans   map[planKey]*C.ddpm_conv
	mms     map[mmKey]*C.ddpm_mm // bf16 matmul plans (linear layers, bf16.go)
	zeros   []float32            // the forward's bias when b is nil
	sums    []float64            // dy's channel sums for a bias gradient (sumsBuf)
	last    [3]string            // the implementations of the last plan created: forward, backward-data, backward-weights
}

// dnnlMu serialises the calls into dnnl.c across backends: its workspace (one buffer per role, grown by plan
// creation) and its oneDNN stream are shared by every plan of the process. Within one backend the calls are serial
// anyway; two backends at once -- tests running in parallel, each with its CPU reference, or a sampler beside a
// trainer -- would otherwise write into each other's reordered operands. Taken by the entry points below (newDNNL,
// probe, dnnlConvFwd, dnnlConvBwdData, dnnlConvBwdWeights, dnnlMatmulBF16), never by plan or create.
var dnnlMu sync.Mutex

// planKey is a plan's shape and input type: switching the precision keeps the plans of both.
type planKey struct {
	s    ops.ConvShape
	bf16 bool
}

// newDNNL returns the oneDNN state for a float32 backend; nil (GEMM path) for float64.
func newDNNL[T Float]() *dnnlState {
	var z T
	if unsafe.Sizeof(z) != 4 {
		return nil
	}
	var err [256]C.char
	dnnlMu.Lock()
	defer dnnlMu.Unlock()
	if C.ddpm_dnnl_init(&err[0], C.int(len(err))) != 0 {
		panic("cpu: oneDNN init: " + C.GoString(&err[0]))
	}
	return &dnnlState{threads: max(1, runtime.GOMAXPROCS(0)), plans: map[planKey]*C.ddpm_conv{}, mms: map[mmKey]*C.ddpm_mm{}}
}

// plan returns the shape's plan, creating it on first use.
func (d *dnnlState) plan(op string, s ops.ConvShape) *C.ddpm_conv {
	key := planKey{s, d.bf16}
	if p, ok := d.plans[key]; ok {
		return p
	}
	p, err := d.create(s, d.bf16)
	if err != nil {
		panic(fmt.Sprintf("cpu %s %+v: %v", op, s, err))
	}
	d.plans[key] = p
	if len(d.zeros) < s.Cout {
		d.zeros = make([]float32, s.Cout)
	}
	return p
}

// create makes a plan (bf16: bf16 inputs, f32 outputs; the weight gradient's inputs too where BF16WeightGrad) and records the implementations oneDNN chose.
func (d *dnnlState) create(s ops.ConvShape, bf16 bool) (*C.ddpm_conv, error) {
	var err [256]C.char
	b, bw := C.int(0), C.int(0)
	if bf16 {
		b = 1
		if BF16WeightGrad(s) {
			bw = 1
		}
	}
	p := C.ddpm_conv_create(C.int(s.N), C.int(s.Cin), C.int(s.H), C.int(s.W), C.int(s.Cout), C.int(s.K),
		C.int(s.Stride), C.int(s.Pad), C.int(s.PadEnd), b, bw, C.int(d.threads), &err[0], C.int(len(err)))
	if p == nil {
		return nil, fmt.Errorf("oneDNN plan: %s", C.GoString(&err[0]))
	}
	for i := range d.last {
		d.last[i] = C.GoString(C.ddpm_conv_impl(p, C.int(i)))
	}
	return p, nil
}

// probe creates (and keeps) the plan of a representative convolution in the given input type and returns the
// implementations oneDNN chose for its three passes: what the ISA check of SetPrecision and the bench line report.
func (d *dnnlState) probe(bf16 bool) ([3]string, error) {
	dnnlMu.Lock()
	defer dnnlMu.Unlock()
	s := probeShape
	key := planKey{s, bf16}
	if _, ok := d.plans[key]; !ok {
		p, err := d.create(s, bf16)
		if err != nil {
			return [3]string{}, err
		}
		d.plans[key] = p
		if len(d.zeros) < s.Cout {
			d.zeros = make([]float32, s.Cout)
		}
	}
	var impl [3]string
	for i := range impl {
		impl[i] = C.GoString(C.ddpm_conv_impl(d.plans[key], C.int(i)))
	}
	return impl, nil
}

func f32p[T Float](v []T) *C.float {
	if v == nil {
		return nil
	}
	return (*C.float)(unsafe.Pointer(&v[0]))
}

func f64p(v []float64) *C.double {
	if v == nil {
		return nil
	}
	return (*C.double)(unsafe.Pointer(&v[0]))
}

func dnnlCheck(op string, s ops.ConvShape, rc C.int) {
	if rc != 0 {
		panic(fmt.Sprintf("cpu %s %+v: oneDNN execution failed (step %d)", op, s, -int(rc)))
	}
}

// dnnlConvFwd: y = conv(x, w) + b (b nil: 0). kept: xs is x kept (dnnlKeep), not NCHW.
func dnnlConvFwd[T Float](d *dnnlState, s ops.ConvShape, xs, ws, bs, ys []T, kept bool) {
	dnnlMu.Lock()
	defer dnnlMu.Unlock()
	p := d.plan("Conv2D", s)
	b := f32p(bs)
	if b == nil {
		b = (*C.float)(unsafe.Pointer(&d.zeros[0]))
	}
	dnnlCheck("Conv2D", s, C.ddpm_conv_fwd(p, f32p(xs), f32p(ws), b, f32p(ys), cbool(kept)))
}

// dnnlKeep writes x (NCHW float32) as the shape's kept x, NHWC bf16, into kept (bf16.go's KeepConvInput).
func dnnlKeep[T Float](d *dnnlState, s ops.ConvShape, xs, kept []T) {
	dnnlMu.Lock()
	defer dnnlMu.Unlock()
	p := d.plan("KeepConvInput", s)
	dnnlCheck("KeepConvInput", s, C.ddpm_conv_keep(p, f32p(xs), unsafe.Pointer(f32p(kept))))
}

// dnnlConvBwdData: dx += conv_backward_data(w, dy); write: dx = …, where dnnlWritesDx.
// sums (nil: none; only where dnnlDySums(d, s, true)): dy's per-sample channel sums, [N][Cout], each fastSum64's.
func dnnlConvBwdData[T Float](d *dnnlState, s ops.ConvShape, ws, dys, dxs []T, write bool, sums []float64) {
	dnnlMu.Lock()
	defer dnnlMu.Unlock()
	p := d.plan("Conv2DBackward", s)
	dnnlCheck("Conv2DBackward", s, C.ddpm_conv_bwd_data(p, f32p(ws), f32p(dys), f32p(dxs), cbool(write), f64p(sums)))
}

// dnnlDySums: the shape's backward-data pass (fromData), or its backward-weights pass where no backward-data pass
// ran before it, can give dy's per-sample channel sums (the bf16 plans whose dy goes through dnnl_layout.c).
func dnnlDySums(d *dnnlState, s ops.ConvShape, fromData bool) bool {
	dnnlMu.Lock()
	defer dnnlMu.Unlock()
	return C.ddpm_conv_dy_sums(d.plan("Conv2DBackward", s), cbool(fromData)) != 0
}

// sumsBuf is the state's buffer for dy's channel sums, at least n long (it grows on a step's first use).
func (d *dnnlState) sumsBuf(n int) []float64 {
	if len(d.sums) < n {
		d.sums = make([]float64, n)
	}
	return d.sums[:n]
}

// dnnlWritesDx: the shape's backward-data pass can write dx instead of adding to it (the bf16 plans whose dx comes
// back through dnnl_layout.c).
func dnnlWritesDx(d *dnnlState, s ops.ConvShape) bool {
	dnnlMu.Lock()
	defer dnnlMu.Unlock()
	return C.ddpm_conv_dx_writes(d.plan("Conv2DBackward", s)) != 0
}

// dnnlConvBwdWeights: dw += Σ_n dy_n ⋆ x_n, db += Σ_{n,i,j} dy (db may be nil). afterData: dnnlConvBwdData ran
// just before with the same dy, unchanged since; the plan then reads the dy it reordered where the layouts agree
// and no other call came between (dnnl.c's held).
// kept: xs is x kept (dnnlKeep).
// sums: as dnnlConvBwdData's (only where dnnlDySums(d, s, false) and !afterData).
func dnnlConvBwdWeights[T Float](d *dnnlState, s ops.ConvShape, xs, dys, dws, dbs []T, afterData, kept bool, sums []float64) {
	dnnlMu.Lock()
	defer dnnlMu.Unlock()
	p := d.plan("Conv2DBackward", s)
	dnnlCheck("Conv2DBackward", s, C.ddpm_conv_bwd_weights(p, f32p(xs), f32p(dys), f32p(dws), f32p(dbs), cbool(afterData),
		cbool(kept), f64p(sums)))
}

// dnnlMatmulBF16 runs c = op(a)·op(b) (+ c where key.acc) with a and b rounded to bf16 (to nearest even) by oneDNN's
// reorders and products accumulated in float32 by its bf16 matmul primitive; the plan is created on the key's first
// use and kept. Equivalent to gemm(transA, transB, m, n, k, 1, bf16(a), lda, bf16(b), ldb, acc ? 1 : 0, c, ldc),
// up to the order of the float32 sums.
func dnnlMatmulBF16[T Float](d *dnnlState, key mmKey, a, b, c []T) {
	dnnlMu.Lock()
	defer dnnlMu.Unlock()
	p, ok := d.mms[key]
	if !ok {
		var err [256]C.char
		p = C.ddpm_mm_create(C.int(key.batch), C.int(key.m), C.int(key.n), C.int(key.k),
			cbool(key.transA), C.int(key.lda), C.long(key.sa), cbool(key.transB), C.int(key.ldb), C.long(key.sb),
			C.int(key.ldc), C.long(key.sc), cbool(key.acc), C.int(d.threads), &err[0], C.int(len(err)))
		if p == nil {
			panic(fmt.Sprintf("cpu matmul bf16 %+v: oneDNN plan: %s", key, C.GoString(&err[0])))
		}
		d.mms[key] = p
	}
	if rc := C.ddpm_mm_run(p, f32p(a), f32p(b), f32p(c)); rc != 0 {
		panic(fmt.Sprintf("cpu matmul bf16 %+v: oneDNN execution failed (step %d)", key, -int(rc)))
	}
}

// mmImpl is oneDNN's implementation name of a key's plan ("" before its first use).
func (d *dnnlState) mmImpl(key mmKey) string {
	if p, ok := d.mms[key]; ok {
		return C.GoString(C.ddpm_mm_impl(p))
	}
	return ""
}

func cbool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

// layoutTest runs ddpm_layout_test (dnnl.c): one of the ports' two layout changes on dims {n, c, h, w}, by
// dnnl_layout.c (own) or by oneDNN's reorder. toNHWC: NCHW f32 src → NHWC bf16 dst (2 bytes an element), else NHWC
// f32 src → NCHW f32 dst, added to it where acc. Errors when own is asked for on a CPU without the instructions.
func layoutTest(toNHWC bool, n, c, h, w int, src []float32, dst unsafe.Pointer, acc, own bool) error {
	dnnlMu.Lock()
	defer dnnlMu.Unlock()
	layout := C.int(C.L_TO_NCHW_F32)
	if toNHWC {
		layout = C.L_TO_NHWC_BF16
	}
	if rc := C.ddpm_layout_test(layout, C.int(n), C.int(c), C.int(h), C.int(w), f32p(src), dst, cbool(acc), cbool(own)); rc != 0 {
		return fmt.Errorf("ddpm_layout_test %d×%d×%d×%d: rc %d", n, c, h, w, int(rc))
	}
	return nil
}

// layoutSums runs dnnl_layout.c's change of NCHW f32 src {n, c, hw} to NHWC bf16 with the per-sample channel sums,
// for TestLayoutMatchesOneDNN: the bf16 copy (2 bytes an element) into dst, the sums [n][c] into sums.
func layoutSums(n, c, hw int, src []float32, dst unsafe.Pointer, sums []float64) {
	dnnlMu.Lock()
	defer dnnlMu.Unlock()
	C.ddpm_nchw_to_nhwc_bf16(f32p(src), (*C.uint16_t)(dst), C.int(n), C.int(c), C.int(hw), f64p(sums))
}

// layoutStream switches dnnl_layout.c's streaming stores on or off, process-wide (TestLayoutMatchesOneDNN runs
// both; BenchmarkLayoutStreamAB compares them).
func layoutStream(on bool) {
	dnnlMu.Lock()
	defer dnnlMu.Unlock()
	C.ddpm_layout_stream(cbool(on))
}

// layoutAvailable: the CPU runs dnnl_layout.c's layout changes.
// Probed once: KeptLen asks per call.
var layoutAvailable = sync.OnceValue(func() bool { return C.ddpm_layout_available() != 0 })

// convAsForward switches backward-data as a forward convolution (dnnl.c's asForward) on or off for the plans created
// from now on, process-wide (TestBF16BackwardDataAsForward).
func convAsForward(on bool) {
	dnnlMu.Lock()
	defer dnnlMu.Unlock()
	C.ddpm_conv_as_forward(cbool(on))
}

// ompThreadLimit is OpenMP's thread limit (OMP_THREAD_LIMIT), to which dnnl.c caps a plan's threads.
func ompThreadLimit() int { return int(C.omp_get_thread_limit()) }

// convSplitWeights switches the split backward-weights pass (dnnl.c's splitWeights) on or off for the plans created
// from now on, process-wide (TestBF16WeightGradSplit).
func convSplitWeights(on bool) {
	dnnlMu.Lock()
	defer dnnlMu.Unlock()
	C.ddpm_conv_split_weights(cbool(on))
}

// probeImpl is oneDNN's implementation of pass i of probeShape's plan in the current input type (probe creates it).
func (d *dnnlState) probeImpl(i int) string {
	impl, err := d.probe(d.bf16)
	if err != nil {
		return err.Error()
	}
	return impl[i]
}

// planImpl is oneDNN's implementation of pass i (0 forward, 1 backward-data, 2 backward-weights) of the shape's plan
// in the current input type ("" before the plan exists).
func (d *dnnlState) planImpl(s ops.ConvShape, i int) string {
	dnnlMu.Lock()
	defer dnnlMu.Unlock()
	p, ok := d.plans[planKey{s, d.bf16}]
	if !ok {
		return ""
	}
	return C.GoString(C.ddpm_conv_impl(p, C.int(i)))
}
