//go:build !cgo

package cpu

// Without cgo there is no OpenBLAS: GEMM falls back to gemmGo, correct but several
// times slower. Build with cgo (the default) and libopenblas-dev for training.

const blasName = "go"

func blasInit() {}

func gemm[T Float](ta, tb bool, m, n, k int, alpha T, a []T, lda int, b []T, ldb int, beta T, c []T, ldc int) {
	gemmGo(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}
