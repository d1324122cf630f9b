package cpu

import (
	"fmt"
	"math"

	"github.com/ddpmgo/ddpm/cpu/internal/vec"

	"github.com/ddpmgo/ddpm/ops"
)

// Add: y[i] = a[i] + b[i]; y may alias a or b.
func (be *Backend[T]) Add(a, b, y ops.Buf) {
	defer be.stop(FamOther, be.start())
	s := be.same("Add", "a, b, y", a, b, y)
	j := be.newJob(jAdd)
	j.a[0], j.a[1], j.a[2] = s[0], s[1], s[2]
	be.parallel(j, len(s[2]))
}

func addRange[T Float](j *job[T], lo, hi int) {
	x, z, o := j.a[0][lo:hi], j.a[1][lo:hi], j.a[2][lo:hi]
	for i := range o {
		o[i] = x[i] + z[i]
	}
}

// Axpy: y[i] += alpha·x[i].
func (be *Backend[T]) Axpy(alpha float32, x, y ops.Buf) {
	defer be.stop(FamOther, be.start())
	write := be.takes(y) // waiting zeros (fills.go): y = αx instead of +=
	s := be.same("Axpy", "x, y", x, y)
	j := be.newJob(jAxpy)
	j.a[0], j.a[1], j.c[0], j.flag = s[0], s[1], T(alpha), write
	be.parallel(j, len(s[1]))
}

func axpyRange[T Float](j *job[T], lo, hi int) {
	xs, ys, al := j.a[0][lo:hi], j.a[1][lo:hi], j.c[0]
	if j.flag {
		for i := range ys {
			ys[i] = al * xs[i]
		}
		return
	}
	for i := range ys {
		ys[i] += al * xs[i]
	}
}

// Scale: x[i] *= alpha.
func (be *Backend[T]) Scale(alpha float32, x ops.Buf) {
	defer be.stop(FamOther, be.start())
	j := be.newJob(jScale)
	j.a[0], j.c[0] = be.buf("Scale", "x", x), T(alpha)
	be.parallel(j, len(j.a[0]))
}

func scaleRange[T Float](j *job[T], lo, hi int) {
	xs, al := j.a[0][lo:hi], j.c[0]
	for i := range xs {
		xs[i] *= al
	}
}

// SiLU: y = x·σ(x) with σ(x) = 1/(1+e^−x), in T arithmetic (exp32 for float32, on
// 16 lanes with AVX-512 where the CPU has it: see silu_amd64.go).
func (be *Backend[T]) SiLU(x, y ops.Buf) {
	defer be.stop(FamSiLU, be.start())
	s := be.same("SiLU", "x, y", x, y)
	j := be.newJob(jSiLU)
	j.a[0], j.a[1] = s[0], s[1]
	be.parallel(j, len(s[0]))
}

func siluRange[T Float](j *job[T], lo, hi int) {
	xs, ys := j.a[0][lo:hi], j.a[1][lo:hi]
	if x32, ok := any(xs).([]float32); ok && siluVec(x32, any(ys).([]float32)) {
		return
	}
	for i, v := range xs {
		ys[i] = v / (1 + expT(-v))
	}
}

// SiLUBackward: dx += dy·σ(x)·(1 + x·(1−σ(x))), in T arithmetic.
func (be *Backend[T]) SiLUBackward(x, dy, dx ops.Buf) {
	defer be.stop(FamSiLU, be.start())
	s := be.same("SiLUBackward", "x, dy, dx", x, dy, dx)
	j := be.newJob(jSiLUBwd)
	j.a[0], j.a[1], j.a[2] = s[0], s[1], s[2]
	be.parallel(j, len(s[0]))
}

func siluBwdRange[T Float](j *job[T], lo, hi int) {
	xs, dys, dxs := j.a[0][lo:hi], j.a[1][lo:hi], j.a[2][lo:hi]
	if x32, ok := any(xs).([]float32); ok && siluBwdVec(x32, any(dys).([]float32), any(dxs).([]float32)) {
		return
	}
	for i, v := range xs {
		sg := 1 / (1 + expT(-v))
		dxs[i] += dys[i] * sg * (1 + v*(1-sg))
	}
}

// TimestepEmbedding: for i < half = Dim/2, f_i = exp(−ln(10000)·i/(half − FreqShift)),
// a = t_n·f_i, y[n,i] = cos(a) and y[n,half+i] = sin(a) with FlipSinToCos (sin first,
// then cos, without), evaluated in float64. An odd Dim leaves a last column, which is
// set to 0 (diffusers pads it so).
func (be *Backend[T]) TimestepEmbedding(s ops.EmbedShape, t, y ops.Buf) {
	defer be.stop(FamOther, be.start())
	checkEmbed(s)
	n, dim := s.N, s.Dim
	ts := arg(be, "TimestepEmbedding", s, "t", t, n)
	ys := arg(be, "TimestepEmbedding", s, "y", y, n*dim)
	half := dim / 2
	first, second := math.Cos, math.Sin
	if !s.FlipSinToCos {
		first, second = math.Sin, math.Cos
	}
	for k := 0; k < n; k++ {
		row := ys[k*dim : (k+1)*dim]
		tv := float64(ts[k])
		for i := 0; i < half; i++ {
			f := math.Exp(-math.Log(10000) * float64(i) / (float64(half) - s.FreqShift))
			row[i] = T(first(tv * f))
			row[half+i] = T(second(tv * f))
		}
		if dim%2 == 1 {
			row[dim-1] = 0
		}
	}
}

// checkEmbed panics on an EmbedShape the embedding is not defined for.
func checkEmbed(s ops.EmbedShape) {
	half := s.Dim / 2
	if s.N < 0 || s.Dim < 1 || (half > 0 && !(float64(half)-s.FreqShift > 0)) {
		panic(fmt.Sprintf("cpu TimestepEmbedding %+v: invalid shape (Dim ≥ 1 and Dim/2 − FreqShift > 0)", s))
	}
}

// Upsample2x: nearest ×2, y[c, i, j] = x[c, i/2, j/2] for x [nc, h, w], y [nc, 2h, 2w].
func (be *Backend[T]) Upsample2x(nc, h, w int, x, y ops.Buf) {
	defer be.stop(FamOther, be.start())
	sh := struct{ NC, H, W int }{nc, h, w}
	xs := arg(be, "Upsample2x", sh, "x", x, nc*h*w)
	ys := arg(be, "Upsample2x", sh, "y", y, nc*4*h*w)
	j := be.newJob(jUpsample)
	j.a[0], j.a[1], j.m[0] = xs, ys, w
	be.parallelRows(j, nc*h, 4*w)
}

func upsampleRows[T Float](j *job[T], lo, hi int) {
	xs, ys, w := j.a[0], j.a[1], j.m[0]
	for r := lo; r < hi; r++ { // r = c·h + i, one input row → two output rows
		src := xs[r*w : (r+1)*w]
		d0 := ys[2*r*2*w : (2*r+1)*2*w]
		for k, v := range src {
			d0[2*k], d0[2*k+1] = v, v
		}
		copy(ys[(2*r+1)*2*w:(2*r+2)*2*w], d0)
	}
}

// Upsample2xBackward: dx[c, i, j] += dy[c,2i,2j] + dy[c,2i,2j+1] + dy[c,2i+1,2j] + dy[c,2i+1,2j+1]
// (summed in that order).
func (be *Backend[T]) Upsample2xBackward(nc, h, w int, dy, dx ops.Buf) {
	defer be.stop(FamOther, be.start())
	sh := struct{ NC, H, W int }{nc, h, w}
	write := be.takes(dx) // waiting zeros (fills.go): dx = … instead of +=
	dys := arg(be, "Upsample2xBackward", sh, "dy", dy, nc*4*h*w)
	dxs := arg(be, "Upsample2xBackward", sh, "dx", dx, nc*h*w)
	j := be.newJob(jUpsampleBwd)
	j.a[0], j.a[1], j.m[0], j.flag = dys, dxs, w, write
	be.parallelRows(j, nc*h, 4*w)
}

func upsampleBwdRows[T Float](j *job[T], lo, hi int) {
	dys, dxs, w := j.a[0], j.a[1], j.m[0]
	for r := lo; r < hi; r++ {
		d := dxs[r*w : (r+1)*w]
		a := dys[2*r*2*w : (2*r+1)*2*w]
		b := dys[(2*r+1)*2*w : (2*r+2)*2*w]
		if j.flag {
			for k := range d {
				d[k] = a[2*k] + a[2*k+1] + b[2*k] + b[2*k+1]
			}
			continue
		}
		for k := range d {
			d[k] += a[2*k] + a[2*k+1] + b[2*k] + b[2*k+1]
		}
	}
}

// Concat along channels: a [N, Ca, HW], b [N, Cb, HW] → y [N, Ca+Cb, HW].
func (be *Backend[T]) Concat(n, ca, cb, hw int, a, b, y ops.Buf) {
	defer be.stop(FamOther, be.start())
	sh := struct{ N, Ca, Cb, HW int }{n, ca, cb, hw}
	as := arg(be, "Concat", sh, "a", a, n*ca*hw)
	bs := arg(be, "Concat", sh, "b", b, n*cb*hw)
	ys := arg(be, "Concat", sh, "y", y, n*(ca+cb)*hw)
	j := be.newJob(jConcat)
	j.a[0], j.a[1], j.a[2] = as, bs, ys
	j.m[0], j.m[1], j.m[2] = ca, cb, hw
	be.parallelRows(j, n, (ca+cb)*hw)
}

func concatRows[T Float](j *job[T], lo, hi int) {
	as, bs, ys := j.a[0], j.a[1], j.a[2]
	ca, cb, hw := j.m[0], j.m[1], j.m[2]
	for s := lo; s < hi; s++ {
		row := ys[s*(ca+cb)*hw : (s+1)*(ca+cb)*hw]
		copy(row[:ca*hw], as[s*ca*hw:(s+1)*ca*hw])
		copy(row[ca*hw:], bs[s*cb*hw:(s+1)*cb*hw])
	}
}

// ConcatBackward: da += dy[:, :Ca], db += dy[:, Ca:]; either may be nil.
func (be *Backend[T]) ConcatBackward(n, ca, cb, hw int, dy, da, db ops.Buf) {
	defer be.stop(FamOther, be.start())
	sh := struct{ N, Ca, Cb, HW int }{n, ca, cb, hw}
	writeA, writeB := be.takes(da), be.takes(db) // waiting zeros (fills.go): copy instead of adding
	dys := arg(be, "ConcatBackward", sh, "dy", dy, n*(ca+cb)*hw)
	das := opt(be, "ConcatBackward", sh, "da", da, n*ca*hw)
	dbs := opt(be, "ConcatBackward", sh, "db", db, n*cb*hw)
	j := be.newJob(jConcatBwd)
	j.a[0], j.a[1], j.a[2] = dys, das, dbs
	j.m[0], j.m[1], j.m[2] = ca, cb, hw
	j.u[0] = 0
	if writeA {
		j.u[0] |= 1
	}
	if writeB {
		j.u[0] |= 2
	}
	be.parallelRows(j, n, (ca+cb)*hw)
}

func concatBwdRows[T Float](j *job[T], lo, hi int) {
	dys, das, dbs := j.a[0], j.a[1], j.a[2]
	ca, cb, hw := j.m[0], j.m[1], j.m[2]
	for s := lo; s < hi; s++ {
		row := dys[s*(ca+cb)*hw : (s+1)*(ca+cb)*hw]
		if das != nil && j.u[0]&1 != 0 {
			copy(das[s*ca*hw:(s+1)*ca*hw], row[:ca*hw])
		} else if das != nil {
			addTo(das[s*ca*hw:(s+1)*ca*hw], row[:ca*hw])
		}
		if dbs != nil && j.u[0]&2 != 0 {
			copy(dbs[s*cb*hw:(s+1)*cb*hw], row[ca*hw:])
		} else if dbs != nil {
			addTo(dbs[s*cb*hw:(s+1)*cb*hw], row[ca*hw:])
		}
	}
}

// addTo: dst[i] += src[i] (with AVX-512 for float32 where the CPU has it; each sum is
// one addition either way, so the result is the same).
func addTo[T Float](dst, src []T) {
	if d, ok := any(dst).([]float32); ok && useAVX512 && len(d) >= 64 {
		vec.Add(d, any(src).([]float32))
		return
	}
	src = src[:len(dst)]
	for i := range dst {
		dst[i] += src[i]
	}
}

// chanShape is the shape of AddChannel and ChannelSum, checked by checkChan.
type chanShape struct{ N, C, HW, LD int }

func checkChan(op string, s chanShape) {
	if s.N < 0 || s.C < 1 || s.HW < 1 || s.LD < s.C {
		panic(fmt.Sprintf("cpu %s %+v: invalid shape (want N ≥ 0, C ≥ 1, HW ≥ 1, LD ≥ C)", op, s))
	}
}

// AddChannel: y[n,c,i] = x[n,c,i] + p[n·ld+c]; y may alias x.
func (be *Backend[T]) AddChannel(n, c, hw, ld int, x, p, y ops.Buf) {
	defer be.stop(FamOther, be.start())
	sh := chanShape{n, c, hw, ld}
	checkChan("AddChannel", sh)
	xs := arg(be, "AddChannel", sh, "x", x, n*c*hw)
	ps := arg(be, "AddChannel", sh, "p", p, ops.RowsLen(n, c, ld))
	ys := arg(be, "AddChannel", sh, "y", y, n*c*hw)
	j := be.newJob(jAddChannel)
	j.a[0], j.a[1], j.a[2], j.m[0], j.m[1], j.m[2] = xs, ps, ys, hw, c, ld
	be.parallelRows(j, n*c, hw)
}

func addChannelRows[T Float](j *job[T], lo, hi int) {
	xs, ps, ys, hw, c, ld := j.a[0], j.a[1], j.a[2], j.m[0], j.m[1], j.m[2]
	for r := lo; r < hi; r++ {
		v := ps[r/c*ld+r%c]
		src, dst := xs[r*hw:(r+1)*hw], ys[r*hw:(r+1)*hw]
		for i := range dst {
			dst[i] = src[i] + v
		}
	}
}

// ChannelSum: dp[n·ld+c] += Σ_i dy[n,c,i], summed in increasing i.
func (be *Backend[T]) ChannelSum(n, c, hw, ld int, dy, dp ops.Buf) {
	defer be.stop(FamOther, be.start())
	sh := chanShape{n, c, hw, ld}
	checkChan("ChannelSum", sh)
	dys := arg(be, "ChannelSum", sh, "dy", dy, n*c*hw)
	dps := arg(be, "ChannelSum", sh, "dp", dp, ops.RowsLen(n, c, ld))
	j := be.newJob(jChannelSum)
	j.a[0], j.a[1], j.m[0], j.m[1], j.m[2] = dys, dps, hw, c, ld
	be.parallelRows(j, n*c, hw)
}

func channelSumRows[T Float](j *job[T], lo, hi int) {
	dys, dps, hw, c, ld := j.a[0], j.a[1], j.m[0], j.m[1], j.m[2]
	for r := lo; r < hi; r++ {
		var s T
		for _, v := range dys[r*hw : (r+1)*hw] {
			s += v
		}
		dps[r/c*ld+r%c] += s
	}
}

// transposeTile is the tile edge of the blocked transpose (a 32×32 tile of float64 is
// 8 KiB: source and destination tiles stay in L1).
const transposeTile = 32

// Transpose: y[n, j, i] = x[n, i, j] for x [N, R, C].
func (be *Backend[T]) Transpose(n, r, c int, x, y ops.Buf) {
	defer be.stop(FamOther, be.start())
	sh := struct{ N, R, C int }{n, r, c}
	xs := arg(be, "Transpose", sh, "x", x, n*r*c)
	ys := arg(be, "Transpose", sh, "y", y, n*r*c)
	be.transpose(n, r, c, xs, ys, false)
}

// TransposeBackward: dx[n, i, j] += dy[n, j, i] for dx [N, R, C], dy [N, C, R].
func (be *Backend[T]) TransposeBackward(n, r, c int, dy, dx ops.Buf) {
	defer be.stop(FamOther, be.start())
	sh := struct{ N, R, C int }{n, r, c}
	dys := arg(be, "TransposeBackward", sh, "dy", dy, n*r*c)
	dxs := arg(be, "TransposeBackward", sh, "dx", dx, n*r*c)
	be.transpose(n, c, r, dys, dxs, true)
}

// transpose writes (or with acc adds) the transpose of each x[s] [r, c] into y[s] [c, r].
func (be *Backend[T]) transpose(n, r, c int, xs, ys []T, acc bool) {
	jb := be.newJob(jTranspose)
	jb.a[0], jb.a[1], jb.m[0], jb.m[1], jb.flag = xs, ys, r, c, acc
	be.parallelRows(jb, n, r*c)
}

func transposeRows[T Float](jb *job[T], lo, hi int) {
	xs, ys, r, c, acc := jb.a[0], jb.a[1], jb.m[0], jb.m[1], jb.flag
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
}
