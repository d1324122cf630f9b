package cpu

import (
	"unsafe"

	"github.com/ddpmgo/ddpm/ops"
)

// Shifted GEMMs on a padded grid: the stride-1 "same" convolutions (K = 2P+1 > 1, every
// 3×3 convolution of the U-Net) without im2col.
//
// The grid. A group of g samples of a [C, H, W] input is laid out per channel as one
// flat row of T = g·Sp + P·Wp + P elements, rows of width Wp = W+P (the image row plus P
// zeros) and samples Sp = (H+P)·Wp apart (the image plus P zero rows), element (n, i, j)
// at base + n·Sp + i·Wp + j with base = P·Wp + P. Between two image rows lie P zeros,
// which serve as the right padding of one row and the left padding of the next; between
// two samples lie P zero rows, the bottom padding of one and the top padding of the
// next. The output uses the same grid without the offset: output (n, i, j) is column
// k = n·Sp + i·Wp + j of a [rows, L] matrix, L = (g−1)·Sp + (H−1)·Wp + W. Then input
// (n, i+p−P, j+q−P), which the tap (p, q) of output (n, i, j) reads, sits at column
// k + p·Wp + q of the input grid for every in-range output, and every out-of-range
// input it reads is one of the zeros. So, with w_pq the [Cout, Cin] slice of the
// weights for tap (p, q) and X_d the [Cin, L] view of the input grid starting at
// column d (row stride T):
//
//	forward          Y  [Cout, L]    = Σ_{p,q} w_pq · X_{p·Wp+q}           (then y = Y at the output columns, + b)
//	backward-data    dX_{p·Wp+q} [Cin, L] += w_pqᵀ · dY   (dY = dy on the output grid, 0 elsewhere; dx += dX at the image)
//
// nine GEMMs with K = Cin (forward) or K = Cout (data) instead of one
// with K = 9·Cin over an im2col matrix nine times the input's size: the input is copied
// once (into the grid) instead of nine times, and there is no col2im. The junk columns
// (the gaps of the output grid, (H+P)·(W+P)/(H·W) − 1 of the work: 6% at 32×32, 13% at
// 16×16, 27% at 8×8) are computed and dropped; dY is 0 there, so that they add nothing
// to dX. The taps are summed in (p, q) order by successive GEMMs (beta = 1), and a
// group's samples never mix, so every result is independent of the number of workers.
// (The backward-weight pass, dw_pq += dY · X_{p·Wp+q}ᵀ, stays on im2col: see
// shiftMinHW.)

// shiftCols is the number of GEMM columns a group of samples aims at (see panelCols).
const shiftCols = 1024

// grid is the padded-grid plan of a shiftable convolution (see the comment above).
type grid struct {
	p, wp, sp, base int
	g               int // samples per group (the last group of a range may have fewer)
}

// shiftMinHW is the smallest image (H·W) for which the forward and backward-data
// passes take the shifted-GEMM path. On this machine's OpenBLAS (one thread,
// GFLOP/s per core, best of 4, batch 64, 3×3): forward 93 vs 80 (im2col) at 64 ch
// 32×32, 95 vs 98 at 128 ch 16×16, 96 vs 112 at 256 ch 8×8; backward-data 94 vs 85,
// 85 vs 111, 101 vs 103. Below 32×32 the junk columns and the nine GEMMs with K =
// Cin (each packing its operands afresh) cost more than the im2col copy saves. The
// backward-weight pass stays on im2col everywhere (76 vs 76, 77 vs 106, 81 vs 118):
// nine GEMMs with a 64–256-wide output each repack dY. A variable only so that tests
// can put small shapes on the shifted path.
var shiftMinHW = 1024

// shiftable reports whether Conv2D's forward and Conv2DBackward's backward-data pass
// take the shifted-GEMM path.
func shiftable(s ops.ConvShape) bool { return sameShape(s) && s.K > 1 && s.H*s.W >= shiftMinHW }

// convGrid plans the grid: groups of g samples with about shiftCols output columns, at
// most colBlockBytes of input grid (one sample at least). Like convPanels, the plan
// depends on the shape and the element size only.
func convGrid[T Float](s ops.ConvShape) grid {
	var z T
	p := s.Pad
	wp := s.W + p
	sp := (s.H + p) * wp
	perSample := max(s.Cin, s.Cout) * sp * int(unsafe.Sizeof(z))
	g := max(1, min(s.N, (shiftCols+sp-1)/sp, colBlockBytes/perSample))
	return grid{p: p, wp: wp, sp: sp, base: p*wp + p, g: g}
}

// t is the input-grid row length of a group of g samples.
func (gr grid) t(g int) int { return g*gr.sp + gr.p*gr.wp + gr.p }

// l is the output-grid row length (the GEMM's columns) of a group of g samples.
func (gr grid) l(s ops.ConvShape, g int) int { return (g-1)*gr.sp + (s.H-1)*gr.wp + s.W }

// groups is the number of groups over the samples [n0, n1).
func (gr grid) groups(n0, n1 int) int { return (n1 - n0 + gr.g - 1) / gr.g }

// toGrid writes the g samples src [g, ch, H, W] onto the grid rows dst[c·ld+off …]
// (length length each, element (n, i, j) at off + n·Sp + i·Wp + j), zeroing the rest
// of each row.
func toGrid[T Float](s ops.ConvShape, gr grid, src []T, ch, g int, dst []T, ld, off, length int) {
	hw := s.H * s.W
	for c := 0; c < ch; c++ {
		row := dst[c*ld : c*ld+length]
		pos := 0
		for n := 0; n < g; n++ {
			plane := src[(n*ch+c)*hw : (n*ch+c+1)*hw]
			for i := 0; i < s.H; i++ {
				a := off + n*gr.sp + i*gr.wp
				clear(row[pos:a])
				copy(row[a:a+s.W], plane[i*s.W:(i+1)*s.W])
				pos = a + s.W
			}
		}
		clear(row[pos:])
	}
}

// tapWeights gathers w [Cout, Cin, K, K] into wt [K·K, Cout, Cin] (one [Cout, Cin]
// matrix per tap), for the output rows [lo, hi).
func tapWeightsRows[T Float](j *job[T], lo, hi int) {
	s, ws, wt := j.conv, j.a[1], j.a[4]
	kk := s.K * s.K
	for o := lo; o < hi; o++ {
		for c := 0; c < s.Cin; c++ {
			src := ws[(o*s.Cin+c)*kk : (o*s.Cin+c+1)*kk]
			for t, v := range src {
				wt[(t*s.Cout+o)*s.Cin+c] = v
			}
		}
	}
}

// tapWeights fills be.wtap with w in tap order (see tapWeightsRows) and returns it.
func (be *Backend[T]) tapWeights(s ops.ConvShape, ws []T) []T {
	wt := grow(be.wtap, len(ws))
	be.wtap = wt
	j := be.newJob(jTapWeights)
	j.conv = s
	j.a[1], j.a[4] = ws, wt
	be.parallelRows(j, s.Cout, s.Cin*s.K*s.K)
	return wt
}

// convShiftFwd is Conv2D on the shifted-GEMM path: one item per group of samples.
func (be *Backend[T]) convShiftFwd(s ops.ConvShape, xs, ws, bs, ys []T) {
	wt := be.tapWeights(s, ws)
	gr := convGrid[T](s)
	j := be.newJob(jConvShiftFwd)
	j.conv, j.grid = s, gr
	j.a[0], j.a[1], j.a[2], j.a[3] = xs, wt, bs, ys
	j.sets[0] = scratch(&be.cols, be.workers, s.Cin*gr.t(gr.g))
	j.sets[1] = scratch(&be.ytmp, be.workers, s.Cout*gr.l(s, gr.g))
	be.forEach(j, gr.groups(0, s.N))
}

// convShiftFwdGroup is group k of convShiftFwd on goroutine wk.
func convShiftFwdGroup[T Float](j *job[T], wk, k int) {
	s, gr, xs, wt, bs, ys := j.conv, j.grid, j.a[0], j.a[1], j.a[2], j.a[3]
	n0 := k * gr.g
	g := min(s.N, n0+gr.g) - n0
	t, l, hw := gr.t(g), gr.l(s, g), s.H*s.W
	xg := j.sets[0][wk][:s.Cin*t]
	yg := j.sets[1][wk][:s.Cout*l]
	toGrid(s, gr, xs[n0*s.Cin*hw:], s.Cin, g, xg, t, gr.base, t)
	oc := s.Cout * s.Cin
	var beta T
	for p := 0; p < s.K; p++ {
		for q := 0; q < s.K; q++ {
			d := p*gr.wp + q
			gemm(false, false, s.Cout, l, s.Cin, 1, wt[(p*s.K+q)*oc:], s.Cin, xg[d:], t, beta, yg, l)
			beta = 1
		}
	}
	for n := 0; n < g; n++ {
		yn := ys[(n0+n)*s.Cout*hw : (n0+n+1)*s.Cout*hw]
		for o := 0; o < s.Cout; o++ {
			var bv T
			if bs != nil {
				bv = bs[o]
			}
			for i := 0; i < s.H; i++ {
				dst := yn[o*hw+i*s.W : o*hw+(i+1)*s.W]
				src := yg[o*l+n*gr.sp+i*gr.wp:][:s.W]
				for jj := range dst {
					dst[jj] = src[jj] + bv
				}
			}
		}
	}
}

// convShiftBwdData is the backward-data pass of Conv2DBackward's chunk [n0, n1) on
// the shifted-GEMM path (goroutine wk), in groups of gr.g samples: dY on the output
// grid, dX = Σ_{p,q} (w_pqᵀ · dY shifted by p·Wp+q) on the input grid (taps in (p, q)
// order), then dx += dX at the image positions. wt is the weights in tap order.
func convShiftBwdData[T Float](j *job[T], wk, n0, n1 int) {
	s, gr, wt, dys, dxs := j.conv, j.grid, j.a[1], j.a[2], j.a[3]
	hw, oc := s.H*s.W, s.Cout*s.Cin
	for k := range gr.groups(n0, n1) {
		a := n0 + k*gr.g
		g := min(n1, a+gr.g) - a
		t, l := gr.t(g), gr.l(s, g)
		dyg := j.sets[1][wk][:s.Cout*l]
		toGrid(s, gr, dys[a*s.Cout*hw:], s.Cout, g, dyg, l, 0, l)
		dxg := j.sets[3][wk][:s.Cin*t]
		clear(dxg)
		for p := 0; p < s.K; p++ {
			for q := 0; q < s.K; q++ {
				d := p*gr.wp + q
				gemm(true, false, s.Cin, l, s.Cout, 1, wt[(p*s.K+q)*oc:], s.Cin, dyg, l, 1, dxg[d:], t)
			}
		}
		for n := 0; n < g; n++ {
			dxn := dxs[(a+n)*s.Cin*hw : (a+n+1)*s.Cin*hw]
			for c := 0; c < s.Cin; c++ {
				for i := 0; i < s.H; i++ {
					addTo(dxn[c*hw+i*s.W:c*hw+(i+1)*s.W], dxg[c*t+gr.base+n*gr.sp+i*gr.wp:][:s.W])
				}
			}
		}
	}
}
