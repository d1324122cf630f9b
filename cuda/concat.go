package cuda

import (
	"fmt"

	"github.com/ddpmgo/ddpm/ops"
)

// Launchers of kernels/concat.cu: Concat, AddChannel, ChannelSum, Transpose and their backwards.

// Block geometry of kernels/concat.cu: concatThreads = CONCAT_THREADS (grid-stride kernels), chanSumWarps =
// CHANSUM_WARPS (rows per block of channel_sum_f32), transposeTile × transposeRows = TRANSPOSE_TILE ×
// TRANSPOSE_ROWS (the threads of a transpose block).
const (
	concatThreads = 256
	chanSumWarps  = 8
	transposeTile = 32
	transposeRows = 8
)

type concatShape struct{ N, Ca, Cb, HW int }

func checkConcat(op string, s concatShape) {
	if s.N < 0 || s.Ca < 0 || s.Cb < 0 || s.HW < 1 {
		panic(fmt.Sprintf("cuda %s %+v: invalid shape", op, s))
	}
	i32(op, s, s.N*(s.Ca+s.Cb)*s.HW)
}

// Concat along channels: a [N, Ca, HW], b [N, Cb, HW] → y [N, Ca+Cb, HW].
func (be *Backend) Concat(n, ca, cb, hw int, a, b, y ops.Buf) {
	const op = "Concat"
	s := concatShape{n, ca, cb, hw}
	checkConcat(op, s)
	as := be.arg(op, s, "a", a, n*ca*hw)
	bs := be.arg(op, s, "b", b, n*cb*hw)
	ys := be.arg(op, s, "y", y, n*(ca+cb)*hw)
	be.gridStride(op, "concat_f32", n*(ca+cb)*hw, concatThreads, Ptr(as.p), Ptr(bs.p), Ptr(ys.p), I32(int32(n)),
		I32(int32(ca)), I32(int32(cb)), I32(int32(hw)))
}

// ConcatBackward: da += dy[:, :Ca], db += dy[:, Ca:]; either may be nil.
func (be *Backend) ConcatBackward(n, ca, cb, hw int, dy, da, db ops.Buf) {
	const op = "ConcatBackward"
	s := concatShape{n, ca, cb, hw}
	checkConcat(op, s)
	dys := be.arg(op, s, "dy", dy, n*(ca+cb)*hw)
	das := be.opt(op, s, "da", da, n*ca*hw)
	dbs := be.opt(op, s, "db", db, n*cb*hw)
	if das == nil && dbs == nil {
		return
	}
	be.gridStride(op, "concat_bwd_f32", n*(ca+cb)*hw, concatThreads, Ptr(dys.p), ptr(das), ptr(dbs), I32(int32(n)),
		I32(int32(ca)), I32(int32(cb)), I32(int32(hw)))
}

type chanShape struct{ N, C, HW, LD int }

func checkChan(op string, s chanShape) {
	if s.N < 0 || s.C < 1 || s.HW < 1 || s.LD < s.C {
		panic(fmt.Sprintf("cuda %s %+v: invalid shape (want N ≥ 0, C ≥ 1, HW ≥ 1, LD ≥ C)", op, s))
	}
	i32(op, s, s.N*s.C*s.HW, ops.RowsLen(s.N, s.C, s.LD))
}

// AddChannel: y[n,c,i] = x[n,c,i] + p[n·ld+c] (y may alias x).
func (be *Backend) AddChannel(n, c, hw, ld int, x, p, y ops.Buf) {
	const op = "AddChannel"
	s := chanShape{n, c, hw, ld}
	checkChan(op, s)
	xs := be.arg(op, s, "x", x, n*c*hw)
	ps := be.arg(op, s, "p", p, ops.RowsLen(n, c, ld))
	ys := be.arg(op, s, "y", y, n*c*hw)
	be.gridStride(op, "add_channel_f32", n*c*hw, concatThreads, Ptr(xs.p), Ptr(ps.p), Ptr(ys.p), I64(int64(n*c*hw)),
		I32(int32(hw)), I32(int32(c)), I32(int32(ld)))
}

// ChannelSum: dp[n·ld+c] += Σ_i dy[n,c,i]; one warp per (n, c).
func (be *Backend) ChannelSum(n, c, hw, ld int, dy, dp ops.Buf) {
	const op = "ChannelSum"
	s := chanShape{n, c, hw, ld}
	checkChan(op, s)
	dys := be.arg(op, s, "dy", dy, n*c*hw)
	dps := be.arg(op, s, "dp", dp, ops.RowsLen(n, c, ld))
	if n == 0 {
		return
	}
	be.keep(op, be.d.Launch("channel_sum_f32", Dim3{X: ceilDiv(n*c, chanSumWarps)}, Dim3{X: 32 * chanSumWarps}, 0,
		Ptr(dys.p), Ptr(dps.p), I32(int32(n*c)), I32(int32(hw)), I32(int32(c)), I32(int32(ld))))
}

type transposeShape struct{ N, R, C int }

// Transpose: y [N, C, R] = the batched transpose of x [N, R, C].
func (be *Backend) Transpose(n, r, c int, x, y ops.Buf) {
	const op = "Transpose"
	s := transposeShape{n, r, c}
	xs := be.arg(op, s, "x", x, n*r*c)
	ys := be.arg(op, s, "y", y, n*r*c)
	be.transpose(op, s, n, r, c, xs, ys, false, nil)
}

// TransposeAdd (ops.TransposeFuser): Transpose with res added by the same kernel (y = transpose(x) + res, the sums
// Add would form after it), one launch fewer.
func (be *Backend) TransposeAdd(n, r, c int, x, res, y ops.Buf) {
	const op = "TransposeAdd"
	s := transposeShape{n, r, c}
	xs := be.arg(op, s, "x", x, n*r*c)
	rs := be.arg(op, s, "res", res, n*r*c)
	ys := be.arg(op, s, "y", y, n*r*c)
	if overlaps(rs, ys) || overlaps(xs, ys) {
		panic(fmt.Sprintf("cuda %s %+v: y overlaps x or res", op, s))
	}
	be.transpose(op, s, n, r, c, xs, ys, false, rs)
}

var _ ops.TransposeFuser = (*Backend)(nil)

// TransposeBackward: dx [N, R, C] += the transpose of dy [N, C, R].
func (be *Backend) TransposeBackward(n, r, c int, dy, dx ops.Buf) {
	const op = "TransposeBackward"
	s := transposeShape{n, r, c}
	dys := be.arg(op, s, "dy", dy, n*r*c)
	dxs := be.arg(op, s, "dx", dx, n*r*c)
	be.transpose(op, s, n, c, r, dys, dxs, true, nil) // dy is [N, C, R]: transposing it gives [N, R, C]
}

// transpose runs transpose_f32 on x [n, rows, cols] → y [n, cols, rows] (+ res [n, cols, rows] unless nil), in
// launches of at most 65535 matrices (the grid's z limit).
func (be *Backend) transpose(op string, s transposeShape, n, rows, cols int, x, y *Buf, acc bool, res *Buf) {
	if n < 0 || rows < 1 || cols < 1 {
		panic(fmt.Sprintf("cuda %s %+v: invalid shape", op, s))
	}
	i32(op, s, n*rows*cols)
	per := DevicePtr(4 * rows * cols)
	for z0 := 0; z0 < n; z0 += gemmMaxZ {
		nz := min(gemmMaxZ, n-z0)
		grid := Dim3{X: ceilDiv(cols, transposeTile), Y: ceilDiv(rows, transposeTile), Z: nz}
		rp := DevicePtr(0)
		if res != nil {
			rp = res.p + DevicePtr(z0)*per
		}
		be.keep(op, be.d.Launch("transpose_f32", grid, Dim3{X: transposeTile, Y: transposeRows}, 0,
			Ptr(x.p+DevicePtr(z0)*per), Ptr(y.p+DevicePtr(z0)*per), I32(int32(rows)), I32(int32(cols)), I32(b2i(acc)),
			Ptr(rp)))
	}
}
