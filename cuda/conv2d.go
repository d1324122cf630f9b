package cuda

import (
	"fmt"

	"github.com/ddpmgo/ddpm/ops"
)

// Launchers of kernels/conv2d.cu.

// gemmTile is GEMM_BM = GEMM_BN of kernels/gemm_tile.cuh (the output tile of one block), gemmThreads its
// GEMM_THREADS and gemmBK its GEMM_BK.
const (
	gemmTile    = 64
	gemmThreads = 256
	gemmBK      = 16
)

// convBiasThreads is CONV_BIAS_THREADS of kernels/conv2d.cu.
const convBiasThreads = 256

// Split-K of the weight gradient: the reduction over batch·OH·OW is cut into convSplits(s) chunks so that small
// weight tensors (few output tiles) still fill the GPU. The count depends on the shape only, which keeps dw
// deterministic. convSplitTarget is the number of blocks aimed at (two waves of 132 SMs on an H100);
// convSplitMinK the smallest chunk worth a block; convSplitMax bounds the scratch (splits·Cout·Cin·K·K floats).
const (
	convSplitTarget = 264
	convSplitMinK   = 256
	convSplitMax    = 32
)

// SetTensorCores selects the convolution kernels: on = TF32 tensor cores (nvcuda::wmma m16n16k8, inputs rounded to
// 10-bit mantissas, FP32 accumulation; a relative error of about 1e-3 per product), off = FP32 FMAs (the default).
// The TF32 kernels come from kernels/ptx/sm80/conv2d.ptx, which the GPU driver loads on devices of compute
// capability 8.0 or newer; on older devices (Driver.TensorCores false) a request for them is refused and the FP32
// kernels stay in use: SetTensorCores returns whether the TF32 kernels are now selected. The emulator always
// emulates TF32 rounding.
func (be *Backend) SetTensorCores(on bool) bool {
	be.tc = on && be.d.TensorCores()
	return be.tc
}

// TensorCores reports whether the convolutions use the TF32 kernels.
func (be *Backend) TensorCores() bool { return be.tc }

func (be *Backend) convKernel(base string) string {
	if be.tc {
		return base + "_tf32"
	}
	return base + "_f32"
}

func checkConv(op string, s ops.ConvShape) {
	if s.N < 0 || s.Cin < 1 || s.H < 1 || s.W < 1 || s.Cout < 1 || s.K < 1 || s.Stride < 1 || s.Pad < 0 ||
		s.PadEnd < 0 || s.OutH() < 1 || s.OutW() < 1 {
		panic(fmt.Sprintf("cuda %s %+v: invalid shape (output %dx%d)", op, s, s.OutH(), s.OutW()))
	}
	// Every product the kernels form in int.
	i32(op, s, s.N*s.Cin*s.H*s.W, s.N*s.Cout*s.OutH()*s.OutW(), s.Cout*s.Cin*s.K*s.K, s.N*s.H*s.W, s.N*s.OutH()*s.OutW())
}

// convDims are the int arguments shared by the conv kernels: N, Cin, H, W, Cout, K, S, P, OH, OW. The kernels take
// the output size as given and read 0 outside x, so ops.ConvShape.PadEnd (padding after x only) enters through OH
// and OW alone.
func convDims(op string, s ops.ConvShape) []Arg {
	v := i32(op, s, s.N, s.Cin, s.H, s.W, s.Cout, s.K, s.Stride, s.Pad, s.OutH(), s.OutW())
	args := make([]Arg, len(v))
	for i, x := range v {
		args[i] = I32(x)
	}
	return args
}

// convSplits is the number of split-K chunks of the weight gradient of s (see convSplitTarget).
func convSplits(s ops.ConvShape) int {
	k := s.N * s.OutH() * s.OutW()
	tiles := ceilDiv(s.Cout, gemmTile) * ceilDiv(s.Cin*s.K*s.K, gemmTile)
	return max(1, min(ceilDiv(convSplitTarget, tiles), k/convSplitMinK, convSplitMax))
}

// Conv2D: y[n,o,i,j] = b[o] + Σ_{c,p,q} w[o,c,p,q]·x[n,c,i·S+p−P, j·S+q−P] (zero outside x; OH and OW count
// PadEnd); b may be nil.
// One implicit-GEMM launch: M = Cout, N = batch·OH·OW, K = Cin·K·K.
func (be *Backend) Conv2D(s ops.ConvShape, x, w, b, y ops.Buf) {
	const op = "Conv2D"
	checkConv(op, s)
	ohw := s.OutH() * s.OutW()
	xs := be.arg(op, s, "x", x, s.N*s.Cin*s.H*s.W)
	ws := be.arg(op, s, "w", w, s.Cout*s.Cin*s.K*s.K)
	bs := be.opt(op, s, "b", b, s.Cout)
	ys := be.arg(op, s, "y", y, s.N*s.Cout*ohw)
	if s.N == 0 {
		return
	}
	grid := Dim3{X: ceilDiv(s.N*ohw, gemmTile), Y: ceilDiv(s.Cout, gemmTile)}
	args := append([]Arg{Ptr(xs.p), Ptr(ws.p), ptr(bs), Ptr(ys.p)}, convDims(op, s)...)
	be.keep(op, be.d.Launch(be.convKernel("conv2d_fwd"), grid, Dim3{X: gemmThreads}, 0, args...))
}

// Conv2DBackward accumulates dx (backward-data), dw (backward-weight) and db[o] += Σ_{n,i,j} dy[n,o,i,j]; any may
// be nil. dx is one implicit GEMM (M = Cin, N = batch·H·W, K = Cout·K·K); dw one split-K implicit GEMM (M = Cout,
// N = Cin·K·K, K = batch·OH·OW) whose chunks are added in a fixed order; db one block per output channel.
func (be *Backend) Conv2DBackward(s ops.ConvShape, x, w, dy, dx, dw, db ops.Buf) {
	const op = "Conv2DBackward"
	checkConv(op, s)
	ohw, hw, ckk := s.OutH()*s.OutW(), s.H*s.W, s.Cin*s.K*s.K
	xs := be.arg(op, s, "x", x, s.N*s.Cin*hw)
	ws := be.arg(op, s, "w", w, s.Cout*ckk)
	dys := be.arg(op, s, "dy", dy, s.N*s.Cout*ohw)
	dxs := be.opt(op, s, "dx", dx, s.N*s.Cin*hw)
	dws := be.opt(op, s, "dw", dw, s.Cout*ckk)
	dbs := be.opt(op, s, "db", db, s.Cout)
	if s.N == 0 {
		return
	}
	dims := convDims(op, s)
	block := Dim3{X: gemmThreads}
	if dbs != nil {
		be.keep(op, be.d.Launch("conv2d_bias_grad_f32", Dim3{X: s.Cout}, Dim3{X: convBiasThreads}, 0,
			Ptr(dys.p), Ptr(dbs.p), I32(int32(s.N)), I32(int32(s.Cout)), I32(int32(ohw))))
	}
	if dxs != nil {
		grid := Dim3{X: ceilDiv(s.N*hw, gemmTile), Y: ceilDiv(s.Cin, gemmTile)}
		args := append([]Arg{Ptr(ws.p), Ptr(dys.p), Ptr(dxs.p)}, dims...)
		be.keep(op, be.d.Launch(be.convKernel("conv2d_bwd_data"), grid, block, 0, args...))
	}
	if dws != nil {
		splits := convSplits(s)
		k := s.N * ohw
		chunk := ceilDiv(ceilDiv(k, splits), gemmBK) * gemmBK // whole k-tiles per chunk
		splits = ceilDiv(k, chunk)
		part := Ptr(0)
		if splits > 1 {
			i32(op, s, splits*s.Cout*ckk)
			part = Ptr(be.scratch(op, splits*s.Cout*ckk))
		}
		grid := Dim3{X: ceilDiv(ckk, gemmTile), Y: ceilDiv(s.Cout, gemmTile), Z: splits}
		args := append([]Arg{Ptr(xs.p), Ptr(dys.p), Ptr(dws.p), part, I32(int32(chunk))}, dims...)
		be.keep(op, be.d.Launch(be.convKernel("conv2d_bwd_weight"), grid, block, 0, args...))
		if splits > 1 {
			be.gridStride(op, "conv2d_splitk_reduce_f32", s.Cout*ckk, elementwiseThreads, part, Ptr(dws.p),
				I32(int32(splits)), I32(int32(s.Cout*ckk)))
		}
	}
}
