package cpu

import (
	"math"

	"github.com/ddpmgo/ddpm/ops"
)

// Add: y[i] = a[i] + b[i]; y may alias a or b.
func (be *Backend[T]) Add(a, b, y ops.Buf) {
	s := be.same("Add", "a, b, y", a, b, y)
	x, z, o := s[0], s[1], s[2]
	be.parallel(len(o), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			o[i] = x[i] + z[i]
		}
	})
}

// Axpy: y[i] += alpha·x[i].
func (be *Backend[T]) Axpy(alpha float32, x, y ops.Buf) {
	s := be.same("Axpy", "x, y", x, y)
	xs, ys, al := s[0], s[1], T(alpha)
	be.parallel(len(ys), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			ys[i] += al * xs[i]
		}
	})
}

// Scale: x[i] *= alpha.
func (be *Backend[T]) Scale(alpha float32, x ops.Buf) {
	xs, al := be.buf("Scale", "x", x), T(alpha)
	be.parallel(len(xs), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			xs[i] *= al
		}
	})
}

// SiLU: y = x·σ(x) with σ(x) = 1/(1+e^−x), in T arithmetic (exp32 for float32).
func (be *Backend[T]) SiLU(x, y ops.Buf) {
	s := be.same("SiLU", "x, y", x, y)
	xs, ys := s[0], s[1]
	be.parallel(len(xs), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			v := xs[i]
			ys[i] = v / (1 + expT(-v))
		}
	})
}

// SiLUBackward: dx += dy·σ(x)·(1 + x·(1−σ(x))), in T arithmetic.
func (be *Backend[T]) SiLUBackward(x, dy, dx ops.Buf) {
	s := be.same("SiLUBackward", "x, dy, dx", x, dy, dx)
	xs, dys, dxs := s[0], s[1], s[2]
	be.parallel(len(xs), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			v := xs[i]
			sg := 1 / (1 + expT(-v))
			dxs[i] += dys[i] * sg * (1 + v*(1-sg))
		}
	})
}

// TimestepEmbedding: for i < half = dim/2, f_i = exp(−ln(10000)·i/half),
// y[n,i] = cos(t_n·f_i), y[n,half+i] = sin(t_n·f_i), evaluated in float64. An odd
// dim leaves a last column, which is set to 0 (diffusers pads it so).
func (be *Backend[T]) TimestepEmbedding(n, dim int, t, y ops.Buf) {
	sh := struct{ N, Dim int }{n, dim}
	ts := be.arg("TimestepEmbedding", sh, "t", t, n)
	ys := be.arg("TimestepEmbedding", sh, "y", y, n*dim)
	half := dim / 2
	for s := 0; s < n; s++ {
		row := ys[s*dim : (s+1)*dim]
		tv := float64(ts[s])
		for i := 0; i < half; i++ {
			f := math.Exp(-math.Log(10000) * float64(i) / float64(half))
			row[i] = T(math.Cos(tv * f))
			row[half+i] = T(math.Sin(tv * f))
		}
		if dim%2 == 1 {
			row[dim-1] = 0
		}
	}
}

// Upsample2x: nearest ×2, y[c, i, j] = x[c, i/2, j/2] for x [nc, h, w], y [nc, 2h, 2w].
func (be *Backend[T]) Upsample2x(nc, h, w int, x, y ops.Buf) {
	sh := struct{ NC, H, W int }{nc, h, w}
	xs := be.arg("Upsample2x", sh, "x", x, nc*h*w)
	ys := be.arg("Upsample2x", sh, "y", y, nc*4*h*w)
	be.parallelRows(nc*h, 4*w, func(lo, hi int) {
		for r := lo; r < hi; r++ { // r = c·h + i, one input row → two output rows
			src := xs[r*w : (r+1)*w]
			d0 := ys[2*r*2*w : (2*r+1)*2*w]
			for j, v := range src {
				d0[2*j], d0[2*j+1] = v, v
			}
			copy(ys[(2*r+1)*2*w:(2*r+2)*2*w], d0)
		}
	})
}

// Upsample2xBackward: dx[c, i, j] += dy[c,2i,2j] + dy[c,2i,2j+1] + dy[c,2i+1,2j] + dy[c,2i+1,2j+1]
// (summed in that order).
func (be *Backend[T]) Upsample2xBackward(nc, h, w int, dy, dx ops.Buf) {
	sh := struct{ NC, H, W int }{nc, h, w}
	dys := be.arg("Upsample2xBackward", sh, "dy", dy, nc*4*h*w)
	dxs := be.arg("Upsample2xBackward", sh, "dx", dx, nc*h*w)
	be.parallelRows(nc*h, 4*w, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			d := dxs[r*w : (r+1)*w]
			a := dys[2*r*2*w : (2*r+1)*2*w]
			b := dys[(2*r+1)*2*w : (2*r+2)*2*w]
			for j := range d {
				d[j] += a[2*j] + a[2*j+1] + b[2*j] + b[2*j+1]
			}
		}
	})
}

// parallelRows is parallel over whole rows of rowLen elements (contiguous row ranges,
// one per worker), for ops whose rows are independent.
func (be *Backend[T]) parallelRows(rows, rowLen int, fn func(lo, hi int)) {
	w := min(be.workers, rows)
	if rows*rowLen < parallelMin || w <= 1 {
		fn(0, rows)
		return
	}
	splitRun(w, rows, fn)
}

// Concat along channels: a [N, Ca, HW], b [N, Cb, HW] → y [N, Ca+Cb, HW].
func (be *Backend[T]) Concat(n, ca, cb, hw int, a, b, y ops.Buf) {
	sh := struct{ N, Ca, Cb, HW int }{n, ca, cb, hw}
	as := be.arg("Concat", sh, "a", a, n*ca*hw)
	bs := be.arg("Concat", sh, "b", b, n*cb*hw)
	ys := be.arg("Concat", sh, "y", y, n*(ca+cb)*hw)
	be.parallelRows(n, (ca+cb)*hw, func(lo, hi int) {
		for s := lo; s < hi; s++ {
			row := ys[s*(ca+cb)*hw : (s+1)*(ca+cb)*hw]
			copy(row[:ca*hw], as[s*ca*hw:(s+1)*ca*hw])
			copy(row[ca*hw:], bs[s*cb*hw:(s+1)*cb*hw])
		}
	})
}

// ConcatBackward: da += dy[:, :Ca], db += dy[:, Ca:]; either may be nil.
func (be *Backend[T]) ConcatBackward(n, ca, cb, hw int, dy, da, db ops.Buf) {
	sh := struct{ N, Ca, Cb, HW int }{n, ca, cb, hw}
	dys := be.arg("ConcatBackward", sh, "dy", dy, n*(ca+cb)*hw)
	das := be.opt("ConcatBackward", sh, "da", da, n*ca*hw)
	dbs := be.opt("ConcatBackward", sh, "db", db, n*cb*hw)
	be.parallelRows(n, (ca+cb)*hw, func(lo, hi int) {
		for s := lo; s < hi; s++ {
			row := dys[s*(ca+cb)*hw : (s+1)*(ca+cb)*hw]
			if das != nil {
				addTo(das[s*ca*hw:(s+1)*ca*hw], row[:ca*hw])
			}
			if dbs != nil {
				addTo(dbs[s*cb*hw:(s+1)*cb*hw], row[ca*hw:])
			}
		}
	})
}

// addTo: dst[i] += src[i].
func addTo[T Float](dst, src []T) {
	src = src[:len(dst)]
	for i := range dst {
		dst[i] += src[i]
	}
}

// AddChannel: y[n,c,i] = x[n,c,i] + p[n·C+c]; y may alias x.
func (be *Backend[T]) AddChannel(n, c, hw int, x, p, y ops.Buf) {
	sh := struct{ N, C, HW int }{n, c, hw}
	xs := be.arg("AddChannel", sh, "x", x, n*c*hw)
	ps := be.arg("AddChannel", sh, "p", p, n*c)
	ys := be.arg("AddChannel", sh, "y", y, n*c*hw)
	be.parallelRows(n*c, hw, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			v := ps[r]
			src, dst := xs[r*hw:(r+1)*hw], ys[r*hw:(r+1)*hw]
			for i := range dst {
				dst[i] = src[i] + v
			}
		}
	})
}

// ChannelSum: dp[n·C+c] += Σ_i dy[n,c,i], summed in increasing i.
func (be *Backend[T]) ChannelSum(n, c, hw int, dy, dp ops.Buf) {
	sh := struct{ N, C, HW int }{n, c, hw}
	dys := be.arg("ChannelSum", sh, "dy", dy, n*c*hw)
	dps := be.arg("ChannelSum", sh, "dp", dp, n*c)
	be.parallelRows(n*c, hw, func(lo, hi int) {
		for r := lo; r < hi; r++ {
			var s T
			for _, v := range dys[r*hw : (r+1)*hw] {
				s += v
			}
			dps[r] += s
		}
	})
}

// transposeTile is the tile edge of the blocked transpose (a 32×32 tile of float64 is
// 8 KiB: source and destination tiles stay in L1).
const transposeTile = 32

// Transpose: y[n, j, i] = x[n, i, j] for x [N, R, C].
func (be *Backend[T]) Transpose(n, r, c int, x, y ops.Buf) {
	sh := struct{ N, R, C int }{n, r, c}
	xs := be.arg("Transpose", sh, "x", x, n*r*c)
	ys := be.arg("Transpose", sh, "y", y, n*r*c)
	be.transpose(n, r, c, xs, ys, false)
}

// TransposeBackward: dx[n, i, j] += dy[n, j, i] for dx [N, R, C], dy [N, C, R].
func (be *Backend[T]) TransposeBackward(n, r, c int, dy, dx ops.Buf) {
	sh := struct{ N, R, C int }{n, r, c}
	dys := be.arg("TransposeBackward", sh, "dy", dy, n*r*c)
	dxs := be.arg("TransposeBackward", sh, "dx", dx, n*r*c)
	be.transpose(n, c, r, dys, dxs, true)
}

// transpose writes (or with acc adds) the transpose of each x[s] [r, c] into y[s] [c, r].
func (be *Backend[T]) transpose(n, r, c int, xs, ys []T, acc bool) {
	be.parallelRows(n, r*c, func(lo, hi int) {
		for s := lo; s < hi; s++ {
			x, y := xs[s*r*c:(s+1)*r*c], ys[s*r*c:(s+1)*r*c]
			for i0 := 0; i0 < r; i0 += transposeTile {
				for j0 := 0; j0 < c; j0 += transposeTile {
					i1, j1 := min(i0+transposeTile, r), min(j0+transposeTile, c)
					for j := j0; j < j1; j++ {
						yr := y[j*r : (j+1)*r]
						if acc {
							for i := i0; i < i1; i++ {
								yr[i] += x[i*c+j]
							}
						} else {
							for i := i0; i < i1; i++ {
								yr[i] = x[i*c+j]
							}
						}
					}
				}
			}
		}
	})
}
