package cuda

import (
	"fmt"

	"github.com/ddpmgo/ddpm/ops"
)

// Launchers of kernels/conv2d.cu: the only place that knows the kernels' argument order and picks their variants
// (precision, block tile, kernel size, split-K).

// The tiles of kernels/igemm.cuh: IG_BN (the N side of every block tile), IG_BK_F32 and IG_BK_TC (k-steps),
// IG_STAGES (the cp.async pipeline) and IG_TC_THREADS.
const (
	igBN        = 128
	igBKF32     = 8
	igBKTC      = 32
	igBKBF16    = 64
	igStages    = 3
	igTCThreads = 128
)

// igF32Threads is IG_F32_THREADS(bm): one thread per 8x8 block of the tile.
func igF32Threads(bm int) int { return bm * igBN / 64 }

// igTCSmem is IG_TC_SMEM(bm), the dynamic shared memory of a tensor-core block: 96 KiB for bm = 128 (over the
// 48 KiB default; the GPU driver raises the function's limit, cu.go), which every sm_80+ GPU allows (99 KiB on
// sm_86/sm_89) and of which an H100 (228 KiB per SM) holds two.
func igTCSmem(bm int) int { return igStages * (bm + igBN) * igBKTC * 4 }

// convBiasThreads is CONV_BIAS_THREADS of kernels/conv2d.cu.
const convBiasThreads = 256

// Store modes of the GEMM kernels (CONV_SET, CONV_ADD, CONV_PART of kernels/conv2d.cu).
const (
	convSet  = 0
	convAdd  = 1
	convPart = 2
)

// Split-K: a GEMM whose tiles would not fill the GPU is cut along k into chunks (grid z) whose partial sums the
// last block of each tile adds in a fixed order, in the same launch (kernels/conv2d.cu, splitk_last), so the result
// depends on the shape only. convSplitTarget is the number of
// blocks aimed at (two blocks on each of an H100's 132 SMs); convSplitMinK the smallest chunk worth a block (k
// indices); convSplitMax bounds the partials (splits × the output).
const (
	convSplitTarget = 264
	convSplitMinK   = 256
	convSplitMax    = 32
)

// convSlack elements follow each packed operand in the scratch (convSlack·4 bytes, also after bfloat16 operands),
// so that the addresses the kernels form for chunks they then zero (a tile's columns past the operand's width) stay
// inside the allocation; the activation packs write zeros there (CONV_SLACK of kernels/conv2d.cu), which
// backward-weight's A chunks past dy's width read.
const convSlack = 256

// SetPrecision selects the convolution kernels (ops.PrecisionSetter): FP32 FMAs (the default); TF32 tensor cores
// (mma.sync m16n8k8 and m16n8k4, inputs rounded to TF32 -- 10-bit stored significands, to nearest, ties away -- as
// they are packed; at most 2^-11 relative per input); or BF16 tensor cores (mma.sync m16n8k16 bf16, inputs packed
// as bfloat16 -- 7 stored bits, rounded to nearest even -- and kept so in shared memory; at most 2^-8 relative per
// input). Both accumulate in FP32. The tensor-core kernels come from kernels/ptx/sm80/conv2d.ptx and
// conv2d_bf16.ptx, which the GPU driver loads on devices of compute capability 8.0 or newer; on older devices
// (Driver.TensorCores false) TF32 and BF16 are refused with an error and the kernels in use stay. The emulator
// emulates the tensor-core instructions (kernels/emu/mma.h, kernels/emu/cp_async.h). At bf16 the GEMMs of the linear
// layers and the attention products change too (gemm_bf16, kernels/linear_bf16.cu: inputs rounded to bfloat16, FP32
// accumulation; softmax stays FP32); at tf32 they stay FP32.
func (be *Backend) SetPrecision(p ops.Precision) error {
	switch p {
	case ops.FP32:
	case ops.TF32, ops.BF16:
		if !be.d.TensorCores() {
			return fmt.Errorf("cuda: precision %s needs tensor cores of compute capability 8.0 or newer; %s has %s",
				p, be.d.Name(), ccString(be.d))
		}
	default:
		return fmt.Errorf("cuda: precision %q: allowed: fp32, tf32, bf16", p)
	}
	if p != be.Precision() {
		be.pw.valid = false // packed for the other kernels' format (packw.go)
	}
	be.prec = p
	return nil
}

// Precision is the precision SetPrecision selected (the convolutions', and at bf16 the GEMMs'); FP32 until set.
func (be *Backend) Precision() ops.Precision {
	if be.prec == "" {
		return ops.FP32
	}
	return be.prec
}

var _ ops.PrecisionSetter = (*Backend)(nil)

// SetTensorCores is SetPrecision(ops.TF32) for on, SetPrecision(ops.FP32) for off, for the callers of the time
// before ops.Precision (backend/backend.go's device.tensor_cores); it returns whether the TF32 kernels are now
// selected.
func (be *Backend) SetTensorCores(on bool) bool {
	if !on {
		_ = be.SetPrecision(ops.FP32) // never refused
		return false
	}
	return be.SetPrecision(ops.TF32) == nil
}

// TensorCores reports whether the convolutions run on tensor cores (TF32 or BF16).
func (be *Backend) TensorCores() bool { return be.tensor() }

func (be *Backend) tensor() bool { return tensorPrec(be.Precision()) }

// tensorPrec says whether the convolutions run on tensor cores at precision p.
func tensorPrec(p ops.Precision) bool { return p == ops.TF32 || p == ops.BF16 }

// convRound is the rounding mode of the packing kernels for the selected kernels (conv_round of kernels/conv2d.cu).
func (be *Backend) convRound() int32 {
	switch be.Precision() {
	case ops.TF32:
		return 1
	case ops.BF16:
		return 2
	}
	return 0
}

// ccString is the driver's compute capability as major.minor, or "no compute capability" for a driver without one.
func ccString(d Driver) string {
	if c, ok := d.(interface{ ComputeCapability() int }); ok {
		return fmt.Sprintf("compute capability %d.%d", c.ComputeCapability()/10, c.ComputeCapability()%10)
	}
	return "no tensor cores"
}

func checkConv(op string, s ops.ConvShape, p ops.Precision) {
	if s.N < 0 || s.Cin < 1 || s.H < 1 || s.W < 1 || s.Cout < 1 || s.K < 1 || s.Stride < 1 || s.Pad < 0 ||
		s.PadEnd < 0 || s.OutH() < 1 || s.OutW() < 1 {
		panic(fmt.Sprintf("cuda %s %+v: invalid shape (output %dx%d)", op, s, s.OutH(), s.OutW()))
	}
	// Every product the kernels form in int: the tensors and their packed copies (conv2d.go's convGeom).
	g := geomOf(s, p)
	i32(op, s, s.N*s.Cin*s.H*s.W, s.N*s.Cout*g.ohw, s.Cout*s.Cin*s.K*s.K, s.N*s.H*s.W, s.N*g.ohw,
		s.N*g.hp*g.wp*g.cinP+convSlack, s.N*g.hq*g.wq*g.coutP+convSlack, s.N*g.ohw*g.coutP+convSlack,
		s.K*s.K*s.Cout*g.cinP+convSlack, s.K*s.K*s.Cin*g.coutP+convSlack)
}

// convGeom: the padded sizes of the packed operands (kernels/conv2d.cu, conv2d_pack_act_*).
type convGeom struct {
	ohw, kk     int
	cinP, coutP int // channels padded for the precision's kernels (convChannels)
	hp, wp      int // x padded by P before and P + PadEnd after (forward, backward-weight)
	hq, wq      int // dy with S−1 zeros between elements and K−1−P around (backward-data)
}

func geomOf(s ops.ConvShape, p ops.Precision) convGeom {
	g := convGeom{ohw: s.OutH() * s.OutW(), kk: s.K * s.K, cinP: convChannels(s.Cin, s.K, p),
		coutP: convChannels(s.Cout, s.K, p), hp: s.H + 2*s.Pad + s.PadEnd, wp: s.W + 2*s.Pad + s.PadEnd,
		hq: s.H + s.K - 1, wq: s.W + s.K - 1}
	return g
}

// convChannels is the packed channel count Cp of c channels for a kernel of size k at precision p: that of every
// packed operand and weight of the convolutions (kernels/conv2d.cu), chosen so that the GEMM kernels' k-loops hold.
// A 16-byte chunk must be whole: Cp is a multiple of 4 floats (8 bfloat16 for BF16), which is all FP32 needs (its
// kernel rows, K·Cp ≥ 8 floats, are always a k-step long). A tensor-core thread copies two adjacent chunks of a row
// (KSrcTC), which must not straddle a kernel row or the k range's end: Cp is a multiple of two chunks (8 floats,
// 16 bfloat16); and for k ≥ 2 a kernel row, k·Cp, is at least a k-step (32 floats, 64 bfloat16), so that a k-step
// changes kernel rows at most once (_kn). So 3 channels at k = 3 are 16 at TF32 and 32 at BF16; 32 stay 32.
func convChannels(c, k int, p ops.Precision) int {
	chunk := 16 / packElem(p)
	if !tensorPrec(p) {
		return roundUp(c, chunk)
	}
	cp := roundUp(c, 2*chunk)
	if k >= 2 {
		cp = max(cp, roundUp(ceilDiv(kStep(p), k), 2*chunk))
	}
	return cp
}

// igemmTaps is the kernel-size variant of conv2d_igemm_* (kernels/conv2d.cu, KSrc) for kernel size k over cp packed
// channels at precision p: k1 for 1x1, kn (at most one kernel-row change per k-step) for k ≥ 2. It panics, naming op
// and s, when cp is not a count that convChannels pads to (an already padded count is its own padding), for which
// the k-loops would read the wrong chunks.
func igemmTaps(op string, s ops.ConvShape, k, cp int, p ops.Precision) string {
	if want := convChannels(cp, k, p); cp != want {
		panic(fmt.Sprintf("cuda %s %+v: %d packed channels at kernel size %d for the %s kernels; convChannels pads "+
			"them to %d", op, s, cp, k, p, want))
	}
	if k == 1 {
		return "k1"
	}
	return "kn"
}

func roundUp(a, b int) int { return ceilDiv(a, b) * b }

// convSplits is the split-K of a GEMM with `tiles` block tiles and k indices: the number of chunks and their
// length, a multiple of step (32, which the FP32 and TF32 k-steps divide; 64, the BF16 k-step: be.kStep).
func convSplits(tiles, k, step int) (splits, chunk int) {
	splits = max(1, min(ceilDiv(convSplitTarget, tiles), k/convSplitMinK, convSplitMax))
	chunk = roundUp(ceilDiv(k, splits), step)
	return ceilDiv(k, chunk), chunk
}

// kStep is the multiple of which split-K chunks are (convSplits) and the k-step of which the tensor-core kernels'
// kernel rows are at least as long (convChannels): IG_BK_BF16 for BF16, else IG_BK_TC.
func kStep(p ops.Precision) int {
	if p == ops.BF16 {
		return igBKBF16
	}
	return igBKTC
}

func (be *Backend) kStep() int { return kStep(be.Precision()) }

// packElem is the size in bytes of a packed operand's element: 2 (bfloat16) for BF16, else 4.
func packElem(p ops.Precision) int {
	if p == ops.BF16 {
		return 2
	}
	return 4
}

func (be *Backend) packElem() int { return packElem(be.Precision()) }

// igemmTile is the block tile's M side for m rows: 64 when m ≤ 64, else 128.
func igemmTile(m int) int {
	if m <= 64 {
		return 64
	}
	return 128
}

// wgradCp is the packed channel count of backward-weight's xp for input channels padded to cinP: for BF16 a
// multiple of 64, so that each thread's eight consecutive B chunks (64 columns) lie in one kernel tap (the B-linear
// source of conv2d_wgrad_bf16_*, kernels/conv2d.cu WSrc); the padding columns are computed and not stored. Else
// cinP.
func (be *Backend) wgradCp(cinP int) int { return wgradCp(cinP, be.Precision()) }

// wgradCp is Backend.wgradCp at precision p.
func wgradCp(cinP int, p ops.Precision) int {
	if p == ops.BF16 {
		return roundUp(cinP, igBKBF16)
	}
	return cinP
}

// igLaunch is the block size, dynamic shared memory and kernel-name precision of the GEMM kernels with tile bm.
func (be *Backend) igLaunch(bm int) (block Dim3, smem int, prec string) {
	if be.tensor() {
		return Dim3{X: igTCThreads}, igTCSmem(bm), string(be.Precision())
	}
	return Dim3{X: igF32Threads(bm)}, 0, "f32"
}

// scratchRegions carves be.scratch into regions of the given sizes in bytes (each followed by 4·convSlack bytes
// and 256-byte aligned) and returns their addresses.
func (be *Backend) scratchRegions(op string, bytes ...int) []DevicePtr {
	offs, total := make([]int, len(bytes)), 0
	for i, n := range bytes {
		offs[i] = total
		total += roundUp(n+4*convSlack, 256)
	}
	base := be.scratch(op, total/4)
	ptrs := make([]DevicePtr, len(bytes))
	for i := range offs {
		ptrs[i] = base + DevicePtr(offs[i])
	}
	return ptrs
}

// packJob is one packing of conv2d_pack_act_*: out[n][a][b][c] (a < hp, b < wp, c < cp) from in [n][c][h][w]
// shifted by off and spread by z (see the kernel), rounded to TF32 on that path, or as bfloat16 (rounded to nearest
// even) for BF16.
type packJob struct {
	in, out                     DevicePtr
	c, h, w, cp, hp, wp, off, z int
}

// packActs launches conv2d_pack_act_f32 (conv2d_pack_act_bf16 for BF16) for up to three packings of n images in
// one launch (grid y: the job); for db ≠ 0 the last job also adds the bias gradient db[c] += Σ in[n][c][·][·], and
// for dchan ≠ 0 the channel sums dchan[n·ld + c] += Σ in[n][c][·][·] (kernels/conv2d.cu, conv_bias_grad_rows:
// per-row partials in part, n·h·c floats, summed by the last block and by each sample's last block), only with the
// layout (off, z) = (0, 1), hp = h, wp = w (backward-weight's dy), whose blocks are the image rows.
func (be *Backend) packActs(op string, n int, jobs []packJob, part, db, dchan DevicePtr, ld int) {
	if len(jobs) < 1 || len(jobs) > 3 {
		panic(fmt.Sprintf("cuda %s: %d packing jobs in one launch (1 to 3)", op, len(jobs)))
	}
	if l := jobs[len(jobs)-1]; (db != 0 || dchan != 0) && (l.off != 0 || l.z != 1 || l.hp != l.h || l.wp != l.w) {
		panic(fmt.Sprintf("cuda %s: the bias gradient folds into the (0, 1) packing only, not (%d, %d) %dx%d → %dx%d",
			op, l.off, l.z, l.h, l.w, l.hp, l.wp))
	}
	name, args := "conv2d_pack_act_bf16", make([]Arg, 0, 36)
	args = append(args, I32(int32(n)))
	if be.Precision() != ops.BF16 {
		name, args = "conv2d_pack_act_f32", append(args, I32(be.convRound()))
	}
	rows := 0
	for i := range 3 {
		var j packJob // unused job slots: zeros (no block reaches them)
		if i < len(jobs) {
			j = jobs[i]
			rows = max(rows, n*j.hp)
		}
		args = append(args, Ptr(j.in), Ptr(j.out), I32(int32(j.c)), I32(int32(j.h)), I32(int32(j.w)),
			I32(int32(j.cp)), I32(int32(j.hp)), I32(int32(j.wp)), I32(int32(j.off)), I32(int32(j.z)))
	}
	if dchan != 0 && 1+n > ticketWords {
		panic(fmt.Sprintf("cuda %s: channel sums of %d samples need %d tickets, there are %d", op, n, 1+n, ticketWords))
	}
	args = append(args, Ptr(part), Ptr(db), Ptr(dchan), I32(int32(ld)), Ptr(be.tickets))
	be.keep(op, be.d.Launch(name, Dim3{X: rows, Y: len(jobs)}, Dim3{X: 256}, 0, args...))
}

// packW launches conv2d_pack_w_f32 (conv2d_pack_w_bf16 for BF16): the weights tap-major (flip = false:
// [Cout][KK][cp]; true: flipped taps, [Cin][KK][cp] over output channels).
func (be *Backend) packW(op string, s ops.ConvShape, w, out DevicePtr, cp int, flip bool) {
	rows := s.Cout
	if flip {
		rows = s.Cin
	}
	args := []Arg{Ptr(w), Ptr(out), I32(int32(s.Cout)), I32(int32(s.Cin)), I32(int32(s.K * s.K)), I32(int32(cp)),
		I32(b2i(flip))}
	name := "conv2d_pack_w_bf16"
	if be.Precision() != ops.BF16 {
		name, args = "conv2d_pack_w_f32", append(args, I32(be.convRound()))
	}
	be.gridStride(op, name, rows*s.K*s.K*cp, elementwiseThreads, args...)
}

// igemm launches conv2d_igemm_*: out (mode) the K-major GEMM of a packed input [n][hin][win][cp] (output pixels
// oh x ow at stride st) with packed weights [m][KK][cp], split along k as convSplits says; with more than one
// split it writes partials to part and returns their count.
type igemmCall struct {
	in, wk, bias, out, part DevicePtr
	addCh, addRes           DevicePtr // the epilogue's addends in mode set (ConvEpi of kernels/conv2d.cu), or 0
	ld                      int       // chan's row stride
	m, npix, oh, ow         int
	hin, win, st, k, cp     int
	mode                    int
}

func (be *Backend) igemm(op string, s ops.ConvShape, c igemmCall, splits, chunk int) {
	bm := igemmTile(c.m)
	block, smem, prec := be.igLaunch(bm)
	name := fmt.Sprintf("conv2d_igemm_%s_m%d_%s", prec, bm, igemmTaps(op, s, c.k, c.cp, be.Precision()))
	grid := Dim3{X: ceilDiv(c.npix, igBN), Y: ceilDiv(c.m, bm), Z: splits}
	be.checkTickets(op, s, grid)
	be.keep(op, be.d.Launch(name, grid, block, smem, Ptr(c.in), Ptr(c.wk), Ptr(c.bias), Ptr(c.out), Ptr(c.part),
		Ptr(be.tickets), I32(int32(c.m)), I32(int32(c.npix)), I32(int32(c.oh)), I32(int32(c.ow)), I32(int32(c.hin)),
		I32(int32(c.win)), I32(int32(c.st)), I32(int32(c.k)), I32(int32(c.cp)), I32(int32(chunk)), I32(int32(c.mode)),
		Ptr(c.addCh), I32(int32(c.ld)), Ptr(c.addRes)))
}

// checkTickets panics when a split GEMM's grid has more tiles than be.tickets has words (convSplits splits only
// grids of fewer than convSplitTarget tiles).
func (be *Backend) checkTickets(op string, s ops.ConvShape, grid Dim3) {
	if grid.Z > 1 && grid.X*grid.Y > ticketWords {
		panic(fmt.Sprintf("cuda %s %+v: a split-K grid of %d tiles, more than the %d tickets", op, s, grid.X*grid.Y,
			ticketWords))
	}
}

// Conv2D: y[n,o,i,j] = b[o] + Σ_{c,p,q} w[o,c,p,q]·x[n,c,i·S+p−P, j·S+q−P] (zero outside x; OH and OW count
// PadEnd); b may be nil. x is packed to NHWC padded by P (and PadEnd after it) and w tap-major (or w's copy from
// PackConvWeights is read, packw.go), then one implicit GEMM (M = Cout, N = batch·OH·OW,
// K = K·K·Cin, the channels padded as convChannels says) computes y, split along K (and summed in order with the bias) when its
// tiles would not fill the GPU. An x kept by KeepConvInput (keep.go) is read as it was packed there.
func (be *Backend) Conv2D(s ops.ConvShape, x, w, b, y ops.Buf) {
	be.conv2D("Conv2D", s, x, w, b, y, ops.ConvAddends{})
}

// Conv2DAdd (ops.ConvFuser) is Conv2D with a.Chan and a.Res added in the GEMM's epilogue (kernels/conv2d.cu,
// ConvEpi: the same sums as AddChannel and Add after it), which saves their two launches.
func (be *Backend) Conv2DAdd(s ops.ConvShape, x, w, b, y ops.Buf, a ops.ConvAddends) {
	be.conv2D("Conv2DAdd", s, x, w, b, y, a)
}

var _ ops.ConvFuser = (*Backend)(nil)

func (be *Backend) conv2D(op string, s ops.ConvShape, x, w, b, y ops.Buf, a ops.ConvAddends) {
	checkConv(op, s, be.Precision())
	g := geomOf(s, be.Precision())
	xp, kept := be.convX(op, s, x) // x (NCHW float32), or, kept, x packed already by KeepConvInput (keep.go)
	ws := be.arg(op, s, "w", w, s.Cout*s.Cin*g.kk)
	bs := be.opt(op, s, "b", b, s.Cout)
	ys := be.arg(op, s, "y", y, s.N*s.Cout*g.ohw)
	var addCh, addRes DevicePtr
	if a.Chan != nil {
		if a.ChanLd < s.Cout {
			panic(fmt.Sprintf("cuda %s %+v: channel addend rows %d apart, fewer than Cout", op, s, a.ChanLd))
		}
		addCh = be.arg(op, s, "chan", a.Chan, ops.RowsLen(s.N, s.Cout, a.ChanLd)).p
	}
	if a.Res != nil {
		rs := be.arg(op, s, "res", a.Res, s.N*s.Cout*g.ohw)
		if overlaps(rs, ys) {
			panic(fmt.Sprintf("cuda %s %+v: the residual overlaps y", op, s))
		}
		addRes = rs.p
	}
	if s.N == 0 {
		return
	}
	npix := s.N * g.ohw
	splits, chunk := convSplits(ceilDiv(npix, igBN)*ceilDiv(s.Cout, igemmTile(s.Cout)), g.kk*g.cinP, be.kStep())
	nout := s.N * s.Cout * g.ohw
	partN := 0
	if splits > 1 {
		partN = splits * nout
		i32(op, s, partN)
	}
	es := be.packElem()
	wk, packed := be.packedFor(ws, s, false) // packed once for the forward pass (packw.go)
	wBytes := es * s.Cout * g.kk * g.cinP
	if packed {
		wBytes = 0
	}
	xBytes := es * s.N * g.hp * g.wp * g.cinP
	if kept {
		xBytes = 0
	}
	r := be.scratchRegions(op, xBytes, wBytes, 4*partN)
	if kept {
		r[0] = xp
	} else {
		be.packActs(op, s.N, []packJob{{xp, r[0], s.Cin, s.H, s.W, g.cinP, g.hp, g.wp, s.Pad, 1}}, 0, 0, 0, 0)
	}
	if !packed {
		wk = r[1]
		be.packW(op, s, ws.p, wk, g.cinP, false)
	}
	var bias DevicePtr
	if bs != nil {
		bias = bs.p
	}
	be.igemm(op, s, igemmCall{in: r[0], wk: wk, bias: bias, out: ys.p, part: r[2], addCh: addCh, ld: a.ChanLd, addRes: addRes,
		m: s.Cout, npix: npix, oh: s.OutH(), ow: s.OutW(), hin: g.hp, win: g.wp, st: s.Stride, k: s.K, cp: g.cinP,
		mode: convSet}, splits, chunk)
}

// Conv2DBackward accumulates dx (backward-data), dw (backward-weight) and db[o] += Σ_{n,i,j} dy[n,o,i,j]; any may
// be nil. dx is the stride-1 convolution of dy spread by S and padded by K−1−P (packed NHWC) with the flipped,
// transposed weights (PackConvWeights' flipped copy when w has one, packw.go): one implicit GEMM (M = Cin,
// N = batch·H·W, K = K·K·Cout). dw is one implicit GEMM over the pixels (M = Cout, N = K·K·Cin, K = batch·OH·OW) of
// dy and x packed NHWC. The three packings of dy, x and dy are one launch (packActs). Both GEMMs split along K when
// their tiles would not fill the GPU, the partials added in a fixed order; db is added by the packing of dy for dw,
// or, without dw, by one block per output channel. A dx that is a waiting zero fill (fills.go) is stored rather
// than accumulated. An x kept by KeepConvInput (keep.go) is read by backward-weight as it was packed there.
func (be *Backend) Conv2DBackward(s ops.ConvShape, x, w, dy, dx, dw, db ops.Buf) {
	be.conv2DBackward("Conv2DBackward", s, x, w, dy, dx, dw, db, nil, 0)
}

// Conv2DBackwardSum (ops.ConvFuser) is Conv2DBackward and ChannelSum(N, Cout, OH·OW, ld, dy, dchan): with dw, the
// channel sums come from the per-row sums that the packing of dy for dw makes for the bias gradient (kernels/conv2d.cu,
// conv_bias_grad_rows), which saves ChannelSum's launch.
func (be *Backend) Conv2DBackwardSum(s ops.ConvShape, x, w, dy, dx, dw, db, dchan ops.Buf, ld int) {
	be.conv2DBackward("Conv2DBackwardSum", s, x, w, dy, dx, dw, db, dchan, ld)
}

func (be *Backend) conv2DBackward(op string, s ops.ConvShape, x, w, dy, dx, dw, db, dchan ops.Buf, ld int) {
	checkConv(op, s, be.Precision())
	freshDx := be.takeZero(dx) // dx is a waiting zero fill: store instead of adding (fills.go)
	g := geomOf(s, be.Precision())
	es := be.packElem()
	hw := s.H * s.W
	xp, kept := be.convX(op, s, x) // x (NCHW float32), or, kept, x packed already by KeepConvInput (keep.go)
	ws := be.arg(op, s, "w", w, s.Cout*s.Cin*g.kk)
	dys := be.arg(op, s, "dy", dy, s.N*s.Cout*g.ohw)
	dxs := be.opt(op, s, "dx", dx, s.N*s.Cin*hw)
	dws := be.opt(op, s, "dw", dw, s.Cout*s.Cin*g.kk)
	dbs := be.opt(op, s, "db", db, s.Cout)
	var dchs *Buf
	if dchan != nil {
		if ld < s.Cout {
			panic(fmt.Sprintf("cuda %s %+v: channel sums' rows %d apart, fewer than Cout", op, s, ld))
		}
		dchs = be.arg(op, s, "dchan", dchan, ops.RowsLen(s.N, s.Cout, ld))
	}
	if s.N == 0 {
		return
	}
	if dchs != nil && (dws == nil || 1+s.N > ticketWords) { // no packing of dy for dw to ride on, or too few tickets
		be.ChannelSum(s.N, s.Cout, g.ohw, ld, dy, dchan)
		dchs = nil
	}
	if dbs != nil && dws == nil { // with dw, backward-weight's packing of dy adds it (packActs)
		be.keep(op, be.d.Launch("conv2d_bias_grad_f32", Dim3{X: s.Cout}, Dim3{X: convBiasThreads}, 0,
			Ptr(dys.p), Ptr(dbs.p), I32(int32(s.N)), I32(int32(s.Cout)), I32(int32(g.ohw))))
	}
	// Backward-data's and backward-weight's operands, packed in one launch into regions of one scratch: dyq, the
	// flipped weights (unless packed for the pass), dx's partials; xp, dy NHWC (with the bias gradient's per-row
	// partials), dw's partials.
	var dxSplits, dxChunk, dwSplits, dwChunk, dxPartN, dwPartN, biasN, wBytes int
	wk, packed := be.packedFor(ws, s, true) // packed once for the forward pass (packw.go)
	if dxs != nil {
		dxSplits, dxChunk = convSplits(ceilDiv(s.N*hw, igBN)*ceilDiv(s.Cin, igemmTile(s.Cin)), g.kk*g.coutP, be.kStep())
		if dxSplits > 1 {
			dxPartN = dxSplits * s.N * s.Cin * hw
			i32(op, s, dxPartN)
		}
		if !packed {
			wBytes = es * s.Cin * g.kk * g.coutP
		}
	}
	npix := s.N * g.ohw
	bm := igemmTile(s.Cout)
	wcp := be.wgradCp(g.cinP)
	if dws != nil {
		i32(op, s, s.N*g.hp*g.wp*wcp+convSlack)
		dwSplits, dwChunk = convSplits(ceilDiv(g.kk*wcp, igBN)*ceilDiv(s.Cout, bm), npix, be.kStep())
		if dwSplits > 1 {
			dwPartN = dwSplits * s.Cout * s.Cin * g.kk
			i32(op, s, dwPartN)
		}
		if dbs != nil || dchs != nil {
			biasN = s.N * s.OutH() * s.Cout
		}
	}
	xBytes := es * s.N * g.hp * g.wp * wcp
	if kept {
		xBytes = 0
	}
	r := be.scratchRegions(op, es*s.N*g.hq*g.wq*g.coutP, wBytes, 4*dxPartN, xBytes, es*npix*g.coutP,
		4*dwPartN, 4*biasN)
	if kept {
		if wcp != g.cinP { // KeptLen keeps no other x (keep.go)
			panic(fmt.Sprintf("cuda %s %+v: kept x has %d channels, backward-weight reads %d", op, s, g.cinP, wcp))
		}
		r[3] = xp
	}
	jobs := make([]packJob, 0, 3)
	if dxs != nil {
		jobs = append(jobs, packJob{dys.p, r[0], s.Cout, s.OutH(), s.OutW(), g.coutP, g.hq, g.wq, s.K - 1 - s.Pad, s.Stride})
	}
	var dbp, dchp DevicePtr
	if dws != nil {
		if !kept {
			jobs = append(jobs, packJob{xp, r[3], s.Cin, s.H, s.W, wcp, g.hp, g.wp, s.Pad, 1})
		}
		jobs = append(jobs, packJob{dys.p, r[4], s.Cout, s.OutH(), s.OutW(), g.coutP, s.OutH(), s.OutW(), 0, 1})
		if dbs != nil {
			dbp = dbs.p
		}
		if dchs != nil {
			dchp = dchs.p
		}
	}
	if len(jobs) > 0 {
		be.packActs(op, s.N, jobs, r[6], dbp, dchp, ld)
	}
	if dxs != nil {
		if !packed {
			wk = r[1]
			be.packW(op, s, ws.p, wk, g.coutP, true)
		}
		mode := convAdd
		if freshDx {
			mode = convSet
		}
		be.igemm(op, s, igemmCall{in: r[0], wk: wk, out: dxs.p, part: r[2], m: s.Cin, npix: s.N * hw, oh: s.H, ow: s.W,
			hin: g.hq, win: g.wq, st: 1, k: s.K, cp: g.coutP, mode: mode}, dxSplits, dxChunk)
	}
	if dws != nil {
		block, smem, prec := be.igLaunch(bm)
		grid := Dim3{X: ceilDiv(g.kk*wcp, igBN), Y: ceilDiv(s.Cout, bm), Z: dwSplits}
		be.checkTickets(op, s, grid)
		be.keep(op, be.d.Launch(fmt.Sprintf("conv2d_wgrad_%s_m%d", prec, bm), grid, block, smem, Ptr(r[4]), Ptr(r[3]),
			Ptr(dws.p), Ptr(r[5]), Ptr(be.tickets), I32(int32(s.Cout)), I32(int32(g.coutP)), I32(int32(s.Cin)),
			I32(int32(wcp)), I32(int32(s.K)), I32(int32(s.Stride)), I32(int32(g.hp)), I32(int32(g.wp)),
			I32(int32(s.OutH())), I32(int32(s.OutW())), I32(int32(npix)), I32(int32(dwChunk)), I32(int32(convAdd))))
	}
}
