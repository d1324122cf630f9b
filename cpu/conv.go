package cpu

import (
	"fmt"
	"unsafe"

	"github.com/ddpmgo/ddpm/ops"
)

// convChunks is the number of fixed batch chunks of the convolution backward pass:
// chunk c takes samples [c·N/m, (c+1)·N/m) with m = min(N, convChunks) and sums its
// weight gradient into a partial of its own; the partials are then added to dw in
// chunk order. The chunks, not the goroutines, fix the summation order, so dw is the
// same for any number of workers. Four keeps two cores busy at a cost of three
// weight-sized partials.
const convChunks = 4

func checkConv(op string, s ops.ConvShape) {
	if s.N < 0 || s.Cin < 1 || s.Cout < 1 || s.K < 1 || s.Stride < 1 || s.Pad < 0 || s.OutH() < 1 || s.OutW() < 1 {
		panic(fmt.Sprintf("cpu %s %+v: invalid shape (output %dx%d)", op, s, s.OutH(), s.OutW()))
	}
}

// direct reports whether the convolution is a plain GEMM on x (1×1, stride 1, no
// padding): the im2col matrix would be x itself.
func direct(s ops.ConvShape) bool { return s.K == 1 && s.Stride == 1 && s.Pad == 0 }

// Conv2D: y[n,o,i,j] = b[o] + Σ_{c,p,q} w[o,c,p,q]·x[n,c,i·S+p−P, j·S+q−P], per sample
// as the GEMM y_n [Cout, OH·OW] = w [Cout, Cin·K·K] · cols_n [Cin·K·K, OH·OW] on the
// im2col matrix cols_n[(c·K+p)·K+q, i·OW+j] = x[n, c, i·S+p−P, j·S+q−P] (0 outside x),
// built and multiplied in blocks of output rows (see colBlockBytes). A 1×1 stride-1
// convolution multiplies x_n itself. Samples run in parallel; b may be nil.
func (be *Backend[T]) Conv2D(s ops.ConvShape, x, w, b, y ops.Buf) {
	checkConv("Conv2D", s)
	ckk, ohw, hw := s.Cin*s.K*s.K, s.OutH()*s.OutW(), s.H*s.W
	xs := be.arg("Conv2D", s, "x", x, s.N*s.Cin*hw)
	ws := be.arg("Conv2D", s, "w", w, s.Cout*ckk)
	bs := be.opt("Conv2D", s, "b", b, s.Cout)
	ys := be.arg("Conv2D", s, "y", y, s.N*s.Cout*ohw)
	rows := rowBlock[T](s)
	var cols [][]T
	if !direct(s) {
		cols = scratch(&be.cols, be.workers, ckk*rows*s.OutW())
	}
	be.forEach(s.N, func(wk, n int) {
		xn := xs[n*s.Cin*hw : (n+1)*s.Cin*hw]
		yn := ys[n*s.Cout*ohw : (n+1)*s.Cout*ohw]
		if cols == nil {
			gemm(false, false, s.Cout, ohw, ckk, 1, ws, ckk, xn, ohw, 0, yn, ohw)
		} else {
			ow := s.OutW()
			for i0 := 0; i0 < s.OutH(); i0 += rows {
				i1 := min(i0+rows, s.OutH())
				np := (i1 - i0) * ow
				im2col(s, xn, cols[wk], i0, i1)
				gemm(false, false, s.Cout, np, ckk, 1, ws, ckk, cols[wk], np, 0, yn[i0*ow:], ohw)
			}
		}
		if bs != nil {
			for o, bv := range bs {
				row := yn[o*ohw : (o+1)*ohw]
				for i := range row {
					row[i] += bv
				}
			}
		}
	})
}

// Conv2DBackward accumulates, per sample n,
//
//	dw += dy_n · cols_nᵀ            (backward-weight, summed over the batch in convChunks fixed chunks)
//	dx_n += col2im(wᵀ · dy_n)       (backward-data: each column entry goes back to the x it came from)
//	db[o] += Σ_{n,i,j} dy[n,o,i,j]  (in float64, n then i·OW+j order)
//
// Any of dx, dw, db may be nil.
func (be *Backend[T]) Conv2DBackward(s ops.ConvShape, x, w, dy, dx, dw, db ops.Buf) {
	checkConv("Conv2DBackward", s)
	ckk, ohw, hw := s.Cin*s.K*s.K, s.OutH()*s.OutW(), s.H*s.W
	xs := be.arg("Conv2DBackward", s, "x", x, s.N*s.Cin*hw)
	ws := be.arg("Conv2DBackward", s, "w", w, s.Cout*ckk)
	dys := be.arg("Conv2DBackward", s, "dy", dy, s.N*s.Cout*ohw)
	dxs := be.opt("Conv2DBackward", s, "dx", dx, s.N*s.Cin*hw)
	dws := be.opt("Conv2DBackward", s, "dw", dw, s.Cout*ckk)
	dbs := be.opt("Conv2DBackward", s, "db", db, s.Cout)

	if dbs != nil {
		be.forEach(s.Cout, func(_, o int) {
			var sum float64
			for n := 0; n < s.N; n++ {
				for _, v := range dys[(n*s.Cout+o)*ohw : (n*s.Cout+o+1)*ohw] {
					sum += float64(v)
				}
			}
			dbs[o] += T(sum)
		})
	}
	if (dxs == nil && dws == nil) || s.N == 0 {
		return
	}

	chunks := min(s.N, convChunks)
	var parts [][]T
	if dws != nil && chunks > 1 {
		parts = scratch(&be.partial, chunks-1, s.Cout*ckk)
	}
	rows, ow := rowBlock[T](s), s.OutW()
	var cols [][]T
	if !direct(s) {
		cols = scratch(&be.cols, be.workers, ckk*rows*ow)
	}
	be.forEach(chunks, func(wk, c int) {
		dwc := dws // chunk 0 accumulates straight into dw
		if c > 0 && dwc != nil {
			dwc = parts[c-1]
			clear(dwc)
		}
		for n := c * s.N / chunks; n < (c+1)*s.N/chunks; n++ {
			xn := xs[n*s.Cin*hw : (n+1)*s.Cin*hw]
			dyn := dys[n*s.Cout*ohw : (n+1)*s.Cout*ohw]
			if cols == nil { // 1×1 stride 1: cols_n is x_n
				if dwc != nil {
					gemm(false, true, s.Cout, s.Cin, hw, 1, dyn, hw, xn, hw, 1, dwc, s.Cin)
				}
				if dxs != nil {
					dxn := dxs[n*s.Cin*hw : (n+1)*s.Cin*hw]
					gemm(true, false, s.Cin, hw, s.Cout, 1, ws, s.Cin, dyn, hw, 1, dxn, hw)
				}
				continue
			}
			col := cols[wk]
			for i0 := 0; i0 < s.OutH(); i0 += rows {
				i1 := min(i0+rows, s.OutH())
				np := (i1 - i0) * ow
				if dwc != nil {
					im2col(s, xn, col, i0, i1)
					gemm(false, true, s.Cout, ckk, np, 1, dyn[i0*ow:], ohw, col, np, 1, dwc, ckk)
				}
				if dxs != nil {
					gemm(true, false, ckk, np, s.Cout, 1, ws, ckk, dyn[i0*ow:], ohw, 0, col, np)
					col2im(s, col, dxs[n*s.Cin*hw:(n+1)*s.Cin*hw], i0, i1)
				}
			}
		}
	})
	if parts != nil {
		be.parallel(len(dws), func(lo, hi int) {
			for _, p := range parts {
				addTo(dws[lo:hi], p[lo:hi])
			}
		})
	}
}

// colBlockBytes bounds the im2col block of one sample: the convolution runs over
// blocks of output rows whose columns [Cin·K·K, rows·OW] fit in this many bytes, so
// that the block stays in the 2 MiB L2 between im2col writing it and the GEMM reading
// it (at 64 channels and 32×32 a whole sample's columns are 2.4 MB). A variable only so
// that tests can force one-row blocks.
var colBlockBytes = 1 << 20

// rowBlock is the number of output rows per im2col block (see colBlockBytes). It
// depends on the shape and the element size only, never on the number of workers.
func rowBlock[T Float](s ops.ConvShape) int {
	var z T
	perRow := s.Cin * s.K * s.K * s.OutW() * int(unsafe.Sizeof(z))
	return max(1, min(s.OutH(), colBlockBytes/perRow))
}

// im2col fills cols [Cin·K·K, (i1−i0)·OW] from one sample x [Cin, H, W] for the output
// rows [i0, i1): cols[(c·K+p)·K+q, (i−i0)·OW+j] = x[c, i·S+p−P, j·S+q−P], 0 outside x.
func im2col[T Float](s ops.ConvShape, x, cols []T, i0, i1 int) {
	ow := s.OutW()
	np := (i1 - i0) * ow
	for c := 0; c < s.Cin; c++ {
		xc := x[c*s.H*s.W : (c+1)*s.H*s.W]
		for p := 0; p < s.K; p++ {
			for q := 0; q < s.K; q++ {
				row := cols[((c*s.K+p)*s.K+q)*np : ((c*s.K+p)*s.K+q+1)*np]
				j0, j1 := validRange(s, q, ow)
				for i := i0; i < i1; i++ {
					dst := row[(i-i0)*ow : (i-i0+1)*ow]
					ih := i*s.Stride + p - s.Pad
					if ih < 0 || ih >= s.H || j0 >= j1 {
						clear(dst)
						continue
					}
					clear(dst[:j0])
					clear(dst[j1:])
					src := xc[ih*s.W : (ih+1)*s.W]
					if s.Stride == 1 {
						copy(dst[j0:j1], src[j0+q-s.Pad:j1+q-s.Pad])
						continue
					}
					for j := j0; j < j1; j++ {
						dst[j] = src[j*s.Stride+q-s.Pad]
					}
				}
			}
		}
	}
}

// col2im is the adjoint of im2col for the output rows [i0, i1):
// dx[c, i·S+p−P, j·S+q−P] += cols[(c·K+p)·K+q, (i−i0)·OW+j] for every in-range target,
// in (c, p, q, i, j) order.
func col2im[T Float](s ops.ConvShape, cols, dx []T, i0, i1 int) {
	ow := s.OutW()
	np := (i1 - i0) * ow
	for c := 0; c < s.Cin; c++ {
		dxc := dx[c*s.H*s.W : (c+1)*s.H*s.W]
		for p := 0; p < s.K; p++ {
			for q := 0; q < s.K; q++ {
				row := cols[((c*s.K+p)*s.K+q)*np : ((c*s.K+p)*s.K+q+1)*np]
				j0, j1 := validRange(s, q, ow)
				for i := i0; i < i1; i++ {
					ih := i*s.Stride + p - s.Pad
					if ih < 0 || ih >= s.H || j0 >= j1 {
						continue
					}
					src := row[(i-i0)*ow : (i-i0+1)*ow]
					dst := dxc[ih*s.W : (ih+1)*s.W]
					if s.Stride == 1 {
						addTo(dst[j0+q-s.Pad:j1+q-s.Pad], src[j0:j1])
						continue
					}
					for j := j0; j < j1; j++ {
						dst[j*s.Stride+q-s.Pad] += src[j]
					}
				}
			}
		}
	}
}

// validRange is the range [j0, j1) of output columns j whose input column
// j·S+q−P lies inside [0, W).
func validRange(s ops.ConvShape, q, ow int) (int, int) {
	// j·S + q − P ≥ 0  ⇔  j ≥ ceil((P−q)/S);  j·S + q − P ≤ W−1  ⇔  j ≤ floor((W−1+P−q)/S).
	j0 := 0
	if d := s.Pad - q; d > 0 {
		j0 = (d + s.Stride - 1) / s.Stride
	}
	hiNum := s.W - 1 + s.Pad - q
	if hiNum < 0 {
		return 0, 0
	}
	j1 := min(ow, hiNum/s.Stride+1)
	if j0 > j1 {
		return 0, 0
	}
	return j0, j1
}
