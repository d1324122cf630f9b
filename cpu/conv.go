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
	if s.N < 0 || s.Cin < 1 || s.Cout < 1 || s.K < 1 || s.Stride < 1 || s.Pad < 0 || s.PadEnd < 0 || s.OutH() < 1 || s.OutW() < 1 {
		panic(fmt.Sprintf("cpu %s %+v: invalid shape (output %dx%d)", op, s, s.OutH(), s.OutW()))
	}
}

// direct reports whether the convolution is a plain GEMM on x (1×1, stride 1, no
// padding): the im2col matrix would be x itself.
func direct(s ops.ConvShape) bool { return s.K == 1 && s.Stride == 1 && s.Pad == 0 && s.PadEnd == 0 }

// Conv2D: y[n,o,i,j] = b[o] + Σ_{c,p,q} w[o,c,p,q]·x[n,c,i·S+p−P, j·S+q−P] (0 outside x;
// PadEnd only adds output rows and columns, whose taps past the end read 0), as GEMMs
// over column panels (see convPanels): for a panel of g samples (or of a block of one
// sample's output rows), y_panel [Cout, cols] = w [Cout, Cin·K·K] · im2col_panel
// [Cin·K·K, cols], with im2col(x)[(c·K+p)·K+q, i·OW+j] = x[n, c, i·S+p−P, j·S+q−P]
// (0 outside x). A panel of several samples goes through a [Cout, cols] scratch and is
// scattered to y's NCHW rows (adding b); a one-sample panel is written in place. A 1×1
// stride-1 convolution multiplies x_n itself. Panels run in parallel; b may be nil.
// Stride-1 "same" convolutions with K > 1 on images of at least shiftMinHW pixels take
// the shifted-GEMM path instead (convshift.go). The float32 backend hands the whole
// convolution to oneDNN instead (dnnl.go).
func (be *Backend[T]) Conv2D(s ops.ConvShape, x, w, b, y ops.Buf) {
	defer be.stop(FamConvFwd, be.start())
	checkConv("Conv2D", s)
	ckk, ohw := s.Cin*s.K*s.K, s.OutH()*s.OutW()
	xs, kept := convX(be, "Conv2D", s, x)
	ws := arg(be, "Conv2D", s, "w", w, s.Cout*ckk)
	bs := opt(be, "Conv2D", s, "b", b, s.Cout)
	ys := arg(be, "Conv2D", s, "y", y, s.N*s.Cout*ohw)
	if s.N == 0 {
		return
	}
	if be.dn != nil { // float32: oneDNN (dnnl.go)
		dnnlConvFwd(be.dn, s, xs, ws, bs, ys, kept)
		return
	}
	xs, ws = be.bf(0, xs), be.bf(1, ws) // float64 at bf16: the reference of bf16.go
	if shiftable(s) {
		be.convShiftFwd(s, xs, ws, bs, ys)
		return
	}
	j := be.newJob(jConvDirect)
	j.conv = s
	j.a[0], j.a[1], j.a[2], j.a[3] = xs, ws, bs, ys
	if direct(s) {
		be.forEach(j, s.N)
		return
	}
	j.kind = jConvFwd
	j.pl = convPanels[T](s)
	j.sets[0] = scratch(&be.cols, be.workers, ckk*j.pl.maxCols)
	if j.pl.group > 1 {
		j.sets[1] = scratch(&be.ytmp, be.workers, s.Cout*j.pl.maxCols)
	}
	be.forEach(j, j.pl.count(0, s.N))
}

// convDirectItem is sample n of a 1×1 stride-1 convolution: y_n = w·x_n (+ b).
func convDirectItem[T Float](j *job[T], n int) {
	s, xs, ws, bs, ys := j.conv, j.a[0], j.a[1], j.a[2], j.a[3]
	ckk, ohw, hw := s.Cin, s.OutH()*s.OutW(), s.H*s.W
	yn := ys[n*s.Cout*ohw : (n+1)*s.Cout*ohw]
	gemm(false, false, s.Cout, ohw, ckk, 1, ws, ckk, xs[n*s.Cin*hw:(n+1)*s.Cin*hw], ohw, 0, yn, ohw)
	addBias(yn, bs, ohw, 0, ohw)
}

// convFwdPanel is panel k of Conv2D on goroutine wk.
func convFwdPanel[T Float](j *job[T], wk, k int) {
	s, xs, ws, bs, ys := j.conv, j.a[0], j.a[1], j.a[2], j.a[3]
	ckk, ohw := s.Cin*s.K*s.K, s.OutH()*s.OutW()
	p := j.pl.at(0, s.N, k)
	np := p.cols(s)
	col := j.sets[0][wk][:ckk*np]
	panelIm2col(p, s, xs, col)
	if p.n1-p.n0 == 1 {
		ow := s.OutW()
		yn := ys[p.n0*s.Cout*ohw : (p.n0+1)*s.Cout*ohw]
		gemm(false, false, s.Cout, np, ckk, 1, ws, ckk, col, np, 0, yn[p.i0*ow:], ohw)
		addBias(yn, bs, ohw, p.i0*ow, p.i1*ow)
		return
	}
	yt := j.sets[1][wk][:s.Cout*np]
	gemm(false, false, s.Cout, np, ckk, 1, ws, ckk, col, np, 0, yt, np)
	for n := p.n0; n < p.n1; n++ {
		yn := ys[n*s.Cout*ohw : (n+1)*s.Cout*ohw]
		off := (n - p.n0) * ohw
		for o := 0; o < s.Cout; o++ {
			copy(yn[o*ohw:(o+1)*ohw], yt[o*np+off:o*np+off+ohw])
		}
		addBias(yn, bs, ohw, 0, ohw)
	}
}

// addBias adds b[o] to the elements [lo, hi) of row o of y [len(b), hw]; nil b adds
// nothing.
func addBias[T Float](y, b []T, hw, lo, hi int) {
	for o, bv := range b {
		row := y[o*hw+lo : o*hw+hi]
		for i := range row {
			row[i] += bv
		}
	}
}

// Conv2DBackward accumulates, per column panel (see Conv2D and convPanels),
//
//	dw += dy_panel · im2col_panelᵀ        (backward-weight; panels summed over the batch in convChunks fixed chunks)
//	dx += col2im(wᵀ · dy_panel)           (backward-data: each column entry goes back to the x it came from)
//	db[o] += Σ_{n,i,j} dy[n,o,i,j]         (in float64, per sample by sum64, then in n order)
//
// where dy_panel [Cout, cols] is dy's rows of the panel's samples side by side. Any of
// dx, dw, db may be nil. Where Conv2D takes the shifted-GEMM path, so does the
// backward-data pass here (convShiftBwdData, per batch chunk); dw stays on the panels.
// The float32 backend goes to oneDNN instead (dnnlConvBwd, dnnl.go).
func (be *Backend[T]) Conv2DBackward(s ops.ConvShape, x, w, dy, dx, dw, db ops.Buf) {
	checkConv("Conv2DBackward", s)
	defer be.convBwdSplit(be.convBwdStart())
	ckk, ohw, hw := s.Cin*s.K*s.K, s.OutH()*s.OutW(), s.H*s.W
	// dx waiting to be zeroed (fills.go) is written instead, where oneDNN's pass can; before dx passes through opt.
	write := false
	if p, ok := dx.(*Buf[T]); ok && be.dn != nil && s.N > 0 && dnnlWritesDx(be.dn, s) {
		write = be.takeZero(p)
	}
	xs, kept := convX(be, "Conv2DBackward", s, x)
	ws := arg(be, "Conv2DBackward", s, "w", w, s.Cout*ckk)
	dys := arg(be, "Conv2DBackward", s, "dy", dy, s.N*s.Cout*ohw)
	dxs := opt(be, "Conv2DBackward", s, "dx", dx, s.N*s.Cin*hw)
	dws := opt(be, "Conv2DBackward", s, "dw", dw, s.Cout*ckk)
	dbs := opt(be, "Conv2DBackward", s, "db", db, s.Cout)
	if be.dn != nil && s.N > 0 && (dxs != nil || dws != nil) { // float32: oneDNN (dnnl.go)
		be.dnnlConvBwd(s, xs, ws, dys, dxs, dws, dbs, write, kept)
		return
	}
	if be.prec == ops.BF16 { // float64 at bf16: the reference of bf16.go, rounding what the oneDNN path rounds
		if dxs != nil { // from bf16 w and dy
			be.conv2DBackward(s, xs, be.bf(1, ws), be.bf(2, dys), dxs, nil, nil)
		}
		if dws != nil && BF16WeightGrad(s) { // from bf16 x and dy
			be.conv2DBackward(s, be.bf(0, xs), ws, be.bf(2, dys), nil, dws, nil)
		} else if dws != nil {
			be.conv2DBackward(s, xs, ws, dys, nil, dws, nil)
		}
		if dbs != nil { // a plain sum: of the float32 dy
			be.conv2DBackward(s, xs, ws, dys, nil, nil, dbs)
		}
		return
	}
	be.conv2DBackward(s, xs, ws, dys, dxs, dws, dbs)
}

// conv2DBackward is Conv2DBackward's GEMM path on unwrapped operands.
func (be *Backend[T]) conv2DBackward(s ops.ConvShape, xs, ws, dys, dxs, dws, dbs []T) {
	ckk := s.Cin * s.K * s.K
	var wt []T // the weights in tap order for the shifted backward-data pass
	if dxs != nil && s.N > 0 && shiftable(s) {
		wt = be.tapWeights(s, ws) // before newJob: it runs a job of its own
	}

	j := be.newJob(jConvBias)
	j.conv = s
	j.a[0], j.a[1], j.a[2], j.a[3], j.a[4] = xs, ws, dys, dxs, dbs
	if dbs != nil {
		t0 := be.phase()
		be.forEach(j, s.Cout)
		be.endPhase(0, 0, t0)
	}
	if (dxs == nil && dws == nil) || s.N == 0 {
		return
	}
	j.kind = jConvBwd
	j.m[0] = min(s.N, convChunks)
	if dws != nil && j.m[0] > 1 {
		j.sets[2] = scratch(&be.partial, j.m[0]-1, s.Cout*ckk)
	}
	j.pl = convPanels[T](s)
	if !direct(s) {
		j.sets[0] = scratch(&be.cols, be.workers, ckk*j.pl.maxCols)
		ytmp := 0
		if j.pl.group > 1 {
			ytmp = s.Cout * j.pl.maxCols
		}
		if wt != nil { // backward-data on the shifted-GEMM path (convshift.go)
			j.grid = convGrid[T](s)
			j.a[1] = wt
			j.flag = true
			ytmp = max(ytmp, s.Cout*j.grid.l(s, j.grid.g))
			j.sets[3] = scratch(&be.dxgrid, be.workers, s.Cin*j.grid.t(j.grid.g))
		}
		if ytmp > 0 {
			j.sets[1] = scratch(&be.ytmp, be.workers, ytmp)
		}
	}
	be.dw = dws
	be.forEach(j, j.m[0])
	if parts := j.sets[2]; parts != nil {
		t0 := be.phase()
		j.kind = jAddParts
		be.parallel(j, len(dws))
		be.endPhase(0, 0, t0)
	}
}

// dnnlConvBwd is Conv2DBackward on oneDNN; a bias gradient without a weight gradient
// goes through convBiasItem, or through dy's channel sums (below).
// kept: xs is x kept (keep.go).
func (be *Backend[T]) dnnlConvBwd(s ops.ConvShape, xs, ws, dys, dxs, dws, dbs []T, writeDx, kept bool) {
	// oneDNN adds the bias gradient to the weight gradient's pass, from the same dy -- which at bf16 is rounded
	// where the weight gradient is (BF16WeightGrad); the bias gradient is a plain sum and takes the float32 dy
	// at every precision (as on the GPU, and in Linear), so it is summed here then: by the pass that changes dy
	// to NHWC bf16 where one does (dnnl_layout.c sums each sample's channels while they are in the cache; a pass
	// of its own over dy cost ~3% of the celeba32 bf16 step), else by convBiasItem. Either way each sample's
	// channel is fastSum64's number and the samples add in n order: the same bias gradient.
	fused := dbs
	if be.prec == ops.BF16 && BF16WeightGrad(s) {
		fused = nil
	}
	var sums, sumsW []float64
	if dbs != nil && (dws == nil || fused == nil) && s.N > 0 {
		switch {
		case dxs != nil && dnnlDySums(be.dn, s, true):
			sums = be.dn.sumsBuf(s.N * s.Cout)
		case dxs == nil && dws != nil && dnnlDySums(be.dn, s, false):
			sums = be.dn.sumsBuf(s.N * s.Cout)
			sumsW = sums
		}
	}
	if dxs != nil {
		t0 := be.phase()
		dnnlConvBwdData(be.dn, s, ws, dys, dxs, writeDx, sums)
		be.endPhase(0, 1, t0)
	}
	if dws != nil {
		t0 := be.phase()
		dnnlConvBwdWeights(be.dn, s, xs, dys, dws, fused, dxs != nil, kept, sumsW)
		be.endPhase(0, 0, t0)
		if fused != nil {
			return
		}
	}
	if dbs == nil {
		return
	}
	t0 := be.phase()
	if sums != nil {
		for o := range s.Cout {
			var sum float64
			for n := range s.N {
				sum += sums[n*s.Cout+o]
			}
			dbs[o] += T(sum)
		}
	} else {
		j := be.newJob(jConvBias)
		j.conv = s
		j.a[2], j.a[4] = dys, dbs
		be.forEach(j, s.Cout)
	}
	be.endPhase(0, 0, t0)
}

// convBiasItem: db[o] += Σ_n Σ_i dy[n, o, i] in float64: per sample by fastSum64 (AVX-512 where the float32 backend
// has it), the samples added in n order.
func convBiasItem[T Float](j *job[T], o int) {
	s, dys, dbs := j.conv, j.a[2], j.a[4]
	ohw := s.OutH() * s.OutW()
	var sum float64
	for n := 0; n < s.N; n++ {
		sum += fastSum64(dys[(n*s.Cout+o)*ohw : (n*s.Cout+o+1)*ohw])
	}
	dbs[o] += T(sum)
}

// addPartsRange adds the weight-gradient partials of chunks 1, 2, … into dw, in chunk order.
func addPartsRange[T Float](j *job[T], lo, hi int) {
	dws := j.be.dw
	for _, p := range j.sets[2] {
		addTo(dws[lo:hi], p[lo:hi])
	}
}

// convBwdChunk is batch chunk c of Conv2DBackward on goroutine wk: samples
// [c·N/m, (c+1)·N/m) with m = min(N, convChunks), its weight gradient summed into a
// partial of its own (chunk 0 straight into dw).
func convBwdChunk[T Float](j *job[T], wk, c int) {
	be, s, xs, ws, dys, dxs := j.be, j.conv, j.a[0], j.a[1], j.a[2], j.a[3]
	chunks, pl := j.m[0], j.pl
	ckk, ohw, hw := s.Cin*s.K*s.K, s.OutH()*s.OutW(), s.H*s.W
	dwc := be.dw // chunk 0 accumulates straight into dw
	if c > 0 && dwc != nil {
		dwc = j.sets[2][c-1]
		clear(dwc)
	}
	n0, n1 := c*s.N/chunks, (c+1)*s.N/chunks
	if j.sets[0] == nil { // 1×1 stride 1: the columns of sample n are x_n
		for n := n0; n < n1; n++ {
			xn := xs[n*s.Cin*hw : (n+1)*s.Cin*hw]
			dyn := dys[n*s.Cout*ohw : (n+1)*s.Cout*ohw]
			if dwc != nil {
				t0 := be.phase()
				gemm(false, true, s.Cout, s.Cin, hw, 1, dyn, hw, xn, hw, 1, dwc, s.Cin)
				be.endPhase(wk, 0, t0)
			}
			if dxs != nil {
				t0 := be.phase()
				dxn := dxs[n*s.Cin*hw : (n+1)*s.Cin*hw]
				gemm(true, false, s.Cin, hw, s.Cout, 1, ws, s.Cin, dyn, hw, 1, dxn, hw)
				be.endPhase(wk, 1, t0)
			}
		}
		return
	}
	shift := j.flag // backward-data on the shifted-GEMM path: the panels do dw only
	if shift && dxs != nil {
		t0 := be.phase()
		convShiftBwdData(j, wk, n0, n1)
		be.endPhase(wk, 1, t0)
	}
	if shift && dwc == nil {
		return
	}
	for k := range pl.count(n0, n1) {
		p := pl.at(n0, n1, k)
		np := p.cols(s)
		col := j.sets[0][wk][:ckk*np]
		// dyp: the panel's dy as a [Cout, np] matrix with row stride ld.
		dyp, ld := dys[p.n0*s.Cout*ohw+p.i0*s.OutW():], ohw
		if p.n1-p.n0 > 1 {
			t0 := be.phase()
			dyt := j.sets[1][wk][:s.Cout*np]
			for n := p.n0; n < p.n1; n++ {
				dyn := dys[n*s.Cout*ohw : (n+1)*s.Cout*ohw]
				off := (n - p.n0) * ohw
				for o := 0; o < s.Cout; o++ {
					copy(dyt[o*np+off:o*np+off+ohw], dyn[o*ohw:(o+1)*ohw])
				}
			}
			dyp, ld = dyt, np
			be.endPhase(wk, 0, t0)
		}
		if dwc != nil {
			t0 := be.phase()
			panelIm2col(p, s, xs, col)
			gemm(false, true, s.Cout, ckk, np, 1, dyp, ld, col, np, 1, dwc, ckk)
			be.endPhase(wk, 0, t0)
		}
		if dxs != nil && !shift {
			t0 := be.phase()
			gemm(true, false, ckk, np, s.Cout, 1, ws, ckk, dyp, ld, 0, col, np)
			panelCol2im(p, s, col, dxs)
			be.endPhase(wk, 1, t0)
		}
	}
}

// colBlockBytes bounds the im2col panel of one GEMM (see convPanels): its columns
// [Cin·K·K, cols] take at most this many bytes (or one output row when a row is
// larger), so that the panel stays in the 4 MiB L2 of a core between im2col writing it
// and the GEMM packing it. A variable only so that tests can force small panels.
var colBlockBytes = 3 << 20

// panelCols is the number of GEMM columns a panel aims at: OpenBLAS's sgemm runs
// ~110 GFLOP/s on one core for N = 64 columns and ~150 for N ≥ 512 (K = 2304,
// M = 256), because it packs the weight matrix once per call. At 8×8 and 16×16 one
// sample has too few columns, so a panel takes several samples.
const panelCols = 1024

// panels cuts the output columns of a convolution into GEMM panels. When one sample's
// columns fit the budget, a panel is group whole samples (the last panel of a range
// may have fewer); otherwise it is one sample's block of rows output rows. The plan
// depends on the shape and the element size only, never on the number of workers.
type panels struct {
	group   int // samples per panel (1 when panels are row blocks)
	rows    int // output rows per panel when group is 1
	outH    int
	maxCols int // the widest panel's column count
}

func convPanels[T Float](s ops.ConvShape) panels {
	var z T
	ow, oh := s.OutW(), s.OutH()
	perRow := s.Cin * s.K * s.K * ow * int(unsafe.Sizeof(z))
	perSample := perRow * oh
	if perSample <= colBlockBytes {
		g := max(1, min(colBlockBytes/perSample, (panelCols+oh*ow-1)/(oh*ow), s.N))
		return panels{group: g, rows: oh, outH: oh, maxCols: g * oh * ow}
	}
	rows := max(1, min(oh, colBlockBytes/perRow))
	return panels{group: 1, rows: rows, outH: oh, maxCols: rows * ow}
}

// count is the number of panels over the samples [n0, n1).
func (pl panels) count(n0, n1 int) int {
	if pl.group > 1 {
		return (n1 - n0 + pl.group - 1) / pl.group
	}
	return (n1 - n0) * ((pl.outH + pl.rows - 1) / pl.rows)
}

// panel is samples [n0, n1) whole, or output rows [i0, i1) of sample n0 (n1 = n0+1).
type panel struct{ n0, n1, i0, i1 int }

// at is the k-th panel over the samples [n0, n1).
func (pl panels) at(n0, n1, k int) panel {
	if pl.group > 1 {
		a := n0 + k*pl.group
		return panel{a, min(n1, a+pl.group), 0, pl.outH}
	}
	per := (pl.outH + pl.rows - 1) / pl.rows
	n, b := n0+k/per, k%per
	return panel{n, n + 1, b * pl.rows, min(pl.outH, (b+1)*pl.rows)}
}

// cols is the panel's column count.
func (p panel) cols(s ops.ConvShape) int { return (p.n1 - p.n0) * (p.i1 - p.i0) * s.OutW() }

// panelIm2col fills col [Cin·K·K, cols] for panel p from x [N, Cin, H, W]: sample
// n's columns start at (n−n0)·(i1−i0)·OW.
func panelIm2col[T Float](p panel, s ops.ConvShape, x, col []T) {
	np, w := p.cols(s), (p.i1-p.i0)*s.OutW()
	for n := p.n0; n < p.n1; n++ {
		im2col(s, x[n*s.Cin*s.H*s.W:(n+1)*s.Cin*s.H*s.W], col[(n-p.n0)*w:], np, p.i0, p.i1)
	}
}

// panelCol2im is the adjoint of panelIm2col: it adds col's entries into dx [N, Cin, H, W].
func panelCol2im[T Float](p panel, s ops.ConvShape, col, dx []T) {
	np, w := p.cols(s), (p.i1-p.i0)*s.OutW()
	for n := p.n0; n < p.n1; n++ {
		col2im(s, col[(n-p.n0)*w:], np, dx[n*s.Cin*s.H*s.W:(n+1)*s.Cin*s.H*s.W], p.i0, p.i1)
	}
}

// im2col fills cols [Cin·K·K, (i1−i0)·OW] (row stride ld) from one sample x [Cin, H, W]
// for the output rows [i0, i1): cols[(c·K+p)·K+q, (i−i0)·OW+j] = x[c, i·S+p−P, j·S+q−P],
// 0 outside x.
func im2col[T Float](s ops.ConvShape, x, cols []T, ld, i0, i1 int) {
	if sameShape(s) {
		im2colSame(s, x, cols, ld, i0, i1)
		return
	}
	ow := s.OutW()
	np := (i1 - i0) * ow
	for c := 0; c < s.Cin; c++ {
		xc := x[c*s.H*s.W : (c+1)*s.H*s.W]
		for p := 0; p < s.K; p++ {
			for q := 0; q < s.K; q++ {
				row := cols[((c*s.K+p)*s.K+q)*ld:][:np]
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
// in (c, p, q, i, j) order. cols has row stride ld.
func col2im[T Float](s ops.ConvShape, cols []T, ld int, dx []T, i0, i1 int) {
	if sameShape(s) {
		col2imSame(s, cols, ld, dx, i0, i1)
		return
	}
	ow := s.OutW()
	np := (i1 - i0) * ow
	for c := 0; c < s.Cin; c++ {
		dxc := dx[c*s.H*s.W : (c+1)*s.H*s.W]
		for p := 0; p < s.K; p++ {
			for q := 0; q < s.K; q++ {
				row := cols[((c*s.K+p)*s.K+q)*ld:][:np]
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

// sameShape reports whether the convolution is stride 1 with "same" padding
// (2·P = K−1, so OH = H and OW = W). Then column (i, j) of im2col row (c, p, q) reads
// x[c] at flat index i·W+j+δ with δ = (p−P)·W + (q−P): each row is one contiguous run
// of x[c] shifted by δ, except for the out-of-range rows and columns, which are 0.
// im2colSame and col2imSame use that to move whole runs instead of OW-element pieces
// (8–32 elements at U-Net sizes, where a call per piece costs more than the copy).
func sameShape(s ops.ConvShape) bool {
	return s.Stride == 1 && 2*s.Pad == s.K-1 && s.PadEnd == 0
}

// sameRows is, for kernel row p, the output rows [ia, ib) ⊆ [i0, i1) whose input row
// i+p−P lies in [0, H).
func sameRows(s ops.ConvShape, p, i0, i1 int) (int, int) {
	return max(i0, s.Pad-p), min(i1, s.H+s.Pad-p)
}

// im2colSame is im2col for sameShape convolutions.
func im2colSame[T Float](s ops.ConvShape, x, cols []T, ld, i0, i1 int) {
	w, hw := s.W, s.H*s.W
	np := (i1 - i0) * w
	for c := 0; c < s.Cin; c++ {
		xc := x[c*hw : (c+1)*hw]
		for p := 0; p < s.K; p++ {
			ia, ib := sameRows(s, p, i0, i1)
			for q := 0; q < s.K; q++ {
				row := cols[((c*s.K+p)*s.K+q)*ld:][:np]
				if ia >= ib {
					clear(row)
					continue
				}
				lo, hi := (ia-i0)*w, (ib-i0)*w
				clear(row[:lo])
				clear(row[hi:])
				// row[k] = xc[k' + δ] with k' = k + i0·W the flat output index; the
				// clamp to [0, H·W) drops only boundary columns, zeroed below.
				d := (p-s.Pad)*w + (q - s.Pad)
				a, b := lo+i0*w+d, hi+i0*w+d
				ka, kb := lo+max(0, -a), hi-max(0, b-hw)
				copy(row[ka:kb], xc[max(0, a):min(hw, b)])
				zeroEdges(row[lo:hi], w, q-s.Pad)
			}
		}
	}
}

// zeroEdges zeroes, in every length-w row of r, the columns j whose input column j+dq
// lies outside [0, w).
func zeroEdges[T Float](r []T, w, dq int) {
	if dq < 0 {
		for k := 0; k < len(r); k += w {
			for t := k; t < k-dq; t++ {
				r[t] = 0
			}
		}
	} else if dq > 0 {
		for k := w - dq; k < len(r); k += w {
			for t := k; t < k+dq; t++ {
				r[t] = 0
			}
		}
	}
}

// col2imSame is col2im for sameShape convolutions: the in-range entries of each row
// are added to one contiguous run of dx[c]. cols is scratch: the out-of-range entries
// are zeroed first, so that adding the whole run adds exactly 0 where a boundary
// column wraps onto a neighbouring row. The order of the additions into each dx
// element is col2im's (c, p, q) order.
func col2imSame[T Float](s ops.ConvShape, cols []T, ld int, dx []T, i0, i1 int) {
	w, hw := s.W, s.H*s.W
	np := (i1 - i0) * w
	for c := 0; c < s.Cin; c++ {
		dxc := dx[c*hw : (c+1)*hw]
		for p := 0; p < s.K; p++ {
			ia, ib := sameRows(s, p, i0, i1)
			if ia >= ib {
				continue
			}
			for q := 0; q < s.K; q++ {
				row := cols[((c*s.K+p)*s.K+q)*ld:][:np]
				lo, hi := (ia-i0)*w, (ib-i0)*w
				zeroEdges(row[lo:hi], w, q-s.Pad)
				d := (p-s.Pad)*w + (q - s.Pad)
				a, b := lo+i0*w+d, hi+i0*w+d
				ka, kb := lo+max(0, -a), hi-max(0, b-hw)
				addTo(dxc[max(0, a):min(hw, b)], row[ka:kb])
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
