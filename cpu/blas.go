//go:build cgo

package cpu

// GEMM goes to OpenBLAS (Debian libopenblas-dev) through cgo. Why not pure Go: on one
// core of this machine, for the per-sample GEMM of a 64→64 3×3 convolution at 32×32
// (64×576 · 576×1024), gonum v0.8.2's blas/gonum Sgemm (no AVX-512 micro-kernel, Go
// does not vectorise) ran at 9.3 GFLOP/s and OpenBLAS 0.3.21's SkylakeX sgemm at
// ~100 GFLOP/s, out of a one-core FP32 peak of 166 (2.6 GHz × 2 FMA units × 16 lanes
// × 2). Convolution, linear and attention are GEMMs, and the CPU backend must compete
// with PyTorch (oneDNN).
//
// Threading: OpenBLAS is pinned to one thread (openblas_set_num_threads(1)) and the
// backend runs several single-threaded GEMMs at once on its own goroutines over a fixed
// partition (per column panel or batch chunk, per (sample, head)). That also parallelises the im2col and
// col2im around each GEMM, which OpenBLAS threading would leave serial, and makes every
// result independent of the thread count. Each cblas call computes every output element
// with one fixed summation order, so a call is deterministic. OpenBLAS's pthread build
// is safe to call from several threads at once. OPENBLAS_CORETYPE is left alone.
//
// Without cgo (CGO_ENABLED=0), blas_nocgo.go substitutes the plain-Go gemmGo.

/*
#cgo LDFLAGS: -lopenblas
#include <cblas.h>
extern void openblas_set_num_threads(int);
*/
import "C"

import (
	"sync"
	"unsafe"
)

var blasOnce sync.Once

// blasInit pins OpenBLAS to one thread (see the file comment).
func blasInit() {
	blasOnce.Do(func() { C.openblas_set_num_threads(1) })
}

// blasName says which GEMM the build uses.
const blasName = "openblas"

// gemm computes, row-major, c = alpha·op(a)·op(b) + beta·c, with op(a) [m, k],
// op(b) [k, n], c [m, n]; op transposes when ta (tb) is set. lda, ldb and ldc are the
// row strides of a, b and c as stored.
func gemm[T Float](ta, tb bool, m, n, k int, alpha T, a []T, lda int, b []T, ldb int, beta T, c []T, ldc int) {
	if !gemmCheck(ta, tb, m, n, k, a, lda, b, ldb, c, ldc) {
		return
	}
	tA, tB := C.enum_CBLAS_TRANSPOSE(C.CblasNoTrans), C.enum_CBLAS_TRANSPOSE(C.CblasNoTrans)
	if ta {
		tA = C.CblasTrans
	}
	if tb {
		tB = C.CblasTrans
	}
	if unsafe.Sizeof(alpha) == 4 {
		C.cblas_sgemm(C.CblasRowMajor, tA, tB, C.blasint(m), C.blasint(n), C.blasint(k),
			C.float(alpha), (*C.float)(unsafe.Pointer(&a[0])), C.blasint(lda),
			(*C.float)(unsafe.Pointer(&b[0])), C.blasint(ldb),
			C.float(beta), (*C.float)(unsafe.Pointer(&c[0])), C.blasint(ldc))
		return
	}
	C.cblas_dgemm(C.CblasRowMajor, tA, tB, C.blasint(m), C.blasint(n), C.blasint(k),
		C.double(alpha), (*C.double)(unsafe.Pointer(&a[0])), C.blasint(lda),
		(*C.double)(unsafe.Pointer(&b[0])), C.blasint(ldb),
		C.double(beta), (*C.double)(unsafe.Pointer(&c[0])), C.blasint(ldc))
}
