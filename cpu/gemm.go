package cpu

import "fmt"

// gemmCheck validates the operands of a row-major GEMM (see gemm) and handles the
// degenerate sizes: it returns false when there is nothing left for a BLAS to do.
// A stride or a slice too short for its matrix panics, because C would not.
func gemmCheck[T Float](ta, tb bool, m, n, k int, a []T, lda int, b []T, ldb int, c []T, ldc int) bool {
	if m < 0 || n < 0 || k < 0 {
		panic(fmt.Sprintf("cpu gemm: negative size m=%d n=%d k=%d", m, n, k))
	}
	if m == 0 || n == 0 {
		return false
	}
	checkMat("c", m, n, c, ldc)
	if k == 0 {
		panic(fmt.Sprintf("cpu gemm: k = 0 (m=%d n=%d)", m, n))
	}
	ra, ca := m, k
	if ta {
		ra, ca = k, m
	}
	rb, cb := k, n
	if tb {
		rb, cb = n, k
	}
	checkMat("a", ra, ca, a, lda)
	checkMat("b", rb, cb, b, ldb)
	return true
}

func checkMat[T Float](name string, rows, cols int, s []T, ld int) {
	if ld < cols || len(s) < (rows-1)*ld+cols {
		panic(fmt.Sprintf("cpu gemm: %s is %dx%d with row stride %d but has %d elements", name, rows, cols, ld, len(s)))
	}
}

// gemmGo is the plain-Go GEMM with gemm's contract: c = alpha·op(a)·op(b) + beta·c.
// It is the fallback without cgo and the reference the BLAS binding is tested
// against. Each c[i,j] sums over l in increasing order.
func gemmGo[T Float](ta, tb bool, m, n, k int, alpha T, a []T, lda int, b []T, ldb int, beta T, c []T, ldc int) {
	if !gemmCheck(ta, tb, m, n, k, a, lda, b, ldb, c, ldc) {
		return
	}
	at := func(i, l int) T {
		if ta {
			return a[l*lda+i]
		}
		return a[i*lda+l]
	}
	for i := 0; i < m; i++ {
		row := c[i*ldc : i*ldc+n]
		for j := range row {
			if beta == 0 {
				row[j] = 0
			} else {
				row[j] *= beta
			}
		}
		for l := 0; l < k; l++ {
			s := alpha * at(i, l)
			if tb {
				for j := range row {
					row[j] += s * b[j*ldb+l]
				}
			} else {
				br := b[l*ldb : l*ldb+n]
				for j := range row {
					row[j] += s * br[j]
				}
			}
		}
	}
}
