package cpu

// Precision bf16 (ops.PrecisionSetter): the semantics of automatic mixed precision. The inputs of the matmul-heavy
// ops — convolutions, linear layers, the attention matmuls — are rounded to bfloat16 (8-bit significand, round to
// nearest even); every product of two bf16 numbers is exact in float32, and the sums run in float32 (oneDNN, and
// OpenBLAS's sgemm). Every other op, every buffer and every output stays float32: master weights, gradients (dx,
// dw, db are float32 sums), AdamW, EMA, group-norm statistics, softmax, the loss, the timestep embedding.
//
//	Conv2D, Conv2DBackward   oneDNN bf16 primitives (dnnl.go): src, weights and diff_dst in bf16, dst, diff_src,
//	                         diff_weights and diff_bias in f32; the reorders from the float32 NCHW/OIHW buffers into
//	                         the primitives' blocked layouts do the rounding (for the AMX kernels' NHWC, the
//	                         transposes of dnnl_layout.c; backward-weights reads the dy that backward-data rounded).
//	                         The weight gradient of the shapes where oneDNN's bf16 kernel is slower than its FP32 one
//	                         stays FP32 (BF16WeightGrad); the bias
//	                         gradient, a plain sum, takes the float32 dy. The kernels are oneDNN's AVX512-BF16
//	                         (jit_bf16:avx512_core_bf16, vdpbf16ps) or AMX (brgconv:avx512_core_amx_bf16) ones;
//	                         the AMX backward-weights kernel runs single-threaded on a slice of the minibatch per
//	                         thread (dnnl.c's splitWeights: on more threads it stalled whenever another process
//	                         wanted a core), images at most 8 wide side by side (partGeometry: its tiles run
//	                         along image rows).
//	Linear, LinearBackward   oneDNN's bf16 matmul (dnnlMatmulBF16; brg:avx512_core_bf16 here): y = bf16(x)·bf16(w)ᵀ,
//	                         dx += bf16(dy)·bf16(w), dw += bf16(dy)ᵀ·bf16(x), the reorders into the primitive's
//	                         layouts rounding; db = Σ dy in float64 as in fp32. (The float64 backend rounds into
//	                         scratch and runs its GEMM.) On celeba32 b64 the linear layers' time per step halved
//	                         against rounding in Go before an FP32 sgemm (66 against 124 ms at fp32).
//	Attention(Backward)      per (sample, head), its q, k, v (and do) rounded into per-worker scratch [L, D] (not
//	                         whole-tensor copies, which would cost more memory than bf16 saves); S = bf16(q)·bf16(k)ᵀ/√D, softmax in float32
//	                         (P saved in float32), o = bf16(P)·bf16(v); dv += bf16(P)ᵀ·bf16(do),
//	                         dP = bf16(do)·bf16(v)ᵀ, dS in float32 from the float32 P, dq += bf16(dS)·bf16(k)/√D,
//	                         dk += bf16(dS)ᵀ·bf16(q)/√D.
//
// Attention rounds in Go and multiplies in float32 — the same numbers as a bf16 GEMM with float32 accumulation,
// without its speed — because oneDNN's bf16 matmul did not pay there. Tried batched over the samples per head (q, k,
// v strided, P dense or through a reorder): with the default 8 channels per head (celeba32's middle block: 32 heads,
// L = 64, D = 8, batch 64) the products are memory-bound on P [N, Heads, L, L] (33 MB), which this code keeps in
// cache per (sample, head) while the batched primitives stream it through their reorders: 126 ms for forward and
// backward against 65 ms at fp32; with one 256-channel head, 12 against 10.5 ms. Attention is ~3% of that step.
//
// Activations saved for the backward pass: the convolution inputs that nothing but the convolution's backward reads
// again — the resnets' SiLU outputs (after the dropout in training) and the upsampled activations, whose producers'
// backward passes recompute what they need — are saved in bf16, as NHWC bfloat16 (keep.go, ops.ConvInputKeeper: the
// same bf16 numbers every pass of the convolution reads, so the results are bit for bit those of float32 inputs,
// in half the bytes, and backward-weights reads them without transposing x again), where the weight gradient takes
// bf16 inputs (BF16WeightGrad); the others stay float32 because precision needs them there: group norm's inputs
// (its statistics are cancellation-prone sums; the concatenations of the up path and every block output are read
// by group norm first), SiLU's inputs, the attention probabilities P (dS = P·(dP − Σ P·dP) cancels), and the
// inputs of the convolutions whose weight gradient stays FP32 (strided ones, conv_out's 3 output channels). On
// celeba32 that is 3.4 MiB per image less (-dry-run). oneDNN's reorders cast x, w and dy into blocked-layout
// workspaces (one per role, shared by all shapes), bf16 — half the float32 ones (train.hostCopyBytes counts them).
//
// The float64 backend (New64) accepts bf16 everywhere: it rounds the same operands to bf16 in Go and computes in
// float64. It is the reference of the bf16 conformance cases (ops/opstest), which thereby check that the float32
// backend rounds exactly the operands it should and accumulates in float32, on any CPU.
//
// The float32 backend refuses bf16 on a CPU with neither AVX512-BF16 nor AMX-BF16 (oneDNN would emulate bf16 there,
// slower than float32), and when oneDNN does not choose a bf16 kernel for a probe convolution.

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"strings"
	"sync"

	"github.com/ddpmgo/ddpm/cpu/internal/vec"
	"github.com/ddpmgo/ddpm/ops"
)

var _ ops.PrecisionSetter = (*Backend[float32])(nil)

// cpuBF16 reports AVX512-BF16 and AMX-BF16 (a variable so that tests can take them away), probed once: BF16WeightGrad
// and KeptLen ask per convolution call, and CPUID traps to the hypervisor in a virtual machine.
var cpuBF16 = sync.OnceValues(vec.BF16)

// probeShape is the convolution SetPrecision asks oneDNN about: a 3×3 64→64 layer at 32×32, batch 8.
var probeShape = ops.ConvShape{N: 8, Cin: 64, H: 32, W: 32, Cout: 64, K: 3, Stride: 1, Pad: 1}

// BF16WeightGrad says whether the weight gradient of a convolution takes bf16 inputs at precision bf16 (the GPU's
// always does; package cuda's conformance test compares the two tightly where this is true);
// where not, it runs in FP32 (x and dy unrounded: more precise, never less). oneDNN 2.6.3's bf16 backward-weights
// kernel (jit_bf16:avx512_core_bf16) is slower than its FP32 one for strided convolutions (a 64→64 stride-2 layer at
// 32×32, batch 64: 250 ms against 13), for few output channels (64→3: 63 ms against 14) and for the 512-channel
// concatenation at 8×8 (131–660 ms against 77–82), measured on an AMD EPYC (Zen 4) on 2 threads; elsewhere it is 1.3–2×
// faster. Its AMX kernel (jit:avx512_core_amx_bf16) gains nothing on those shapes taken together (an Intel Xeon with
// AMX, 2 threads, batch 64, three alternating runs of the celeba32 step: 159 ms per step for them in bf16 against 145
// in FP32; faster on 64→3 and 64→64 stride 2, slower on 128→128 stride 2 and on the 512-channel ones), so the rule is
// the same there; rechecked after the AMX kernel became one single-threaded primitive per thread (dnnl.c's
// splitWeights): bf16 on every shape was slower still (two alternating runs under load, 3755 and 4425 ms per step
// against 2849 and 3005). Since that kernel sees images at most 8 wide side by side (dnnl.c's partGeometry), the
// 512-channel ones at 8×8 are faster in bf16 on AMX: the celeba32 step took 2631, 2904, 3136 ms against 2848, 3142,
// 3359 with them in FP32 (three alternating runs), so on a CPU with AMX images at most 8 wide take bf16 at any
// width of Cin. It is a function of the shape and the CPU alone, so that a run's numbers do not depend on timings.
func BF16WeightGrad(s ops.ConvShape) bool {
	if s.Stride != 1 || s.Cout < 16 {
		return false
	}
	_, amx := cpuBF16()
	return s.Cin < 512 || amx && s.W <= 8
}

// RoundBF16 rounds v to the nearest bfloat16 (ties to even), returned as the float32 of the same value: the upper
// 16 bits of float32 with the lower 16 cleared. NaN stays NaN (quieted, sign kept); values past the largest
// bfloat16 round to ±Inf as IEEE rounding does.
func RoundBF16(v float32) float32 {
	b := math.Float32bits(v)
	if b&0x7fffffff > 0x7f800000 { // NaN: adding the rounding bias could carry it into Inf
		return math.Float32frombits((b | 0x00400000) &^ 0xffff)
	}
	b += 0x7fff + (b>>16)&1
	return math.Float32frombits(b &^ 0xffff)
}

// roundBF16To sets dst[i] = RoundBF16(src[i]) (float64 elements go through float32 first: the float64 backend's
// inputs are float32 values, so that rounding is exact for them).
// On the float32 backend with AVX-512, runs of 16 or more go through vec.RoundBF16 (the same numbers; shorter ones,
// such as attention's rows of 8 channels, cost more through its padded block than here).
func roundBF16To[T Float](dst, src []T) {
	if s32, ok := any(src).([]float32); ok && useAVX512 && len(src) >= 16 {
		vec.RoundBF16(any(dst).([]float32), s32)
		return
	}
	dst = dst[:len(src)]
	for i, v := range src {
		dst[i] = T(RoundBF16(float32(v)))
	}
}

// Precision is the backend's precision (ops.PrecisionSetter): fp32 unless SetPrecision changed it.
func (be *Backend[T]) Precision() ops.Precision {
	if be.prec == "" {
		return ops.FP32
	}
	return be.prec
}

// SetPrecision selects fp32 or bf16 (see the file comment); tf32 is refused (GPU tensor cores only), and so is bf16
// on the float32 backend without the instructions or oneDNN kernels for it. On an error the precision is unchanged.
func (be *Backend[T]) SetPrecision(p ops.Precision) error {
	switch p {
	case ops.FP32:
	case ops.TF32:
		return fmt.Errorf("cpu: precision tf32 is for GPU tensor cores (-device cuda); the CPU backend runs fp32 or bf16")
	case ops.BF16:
		if be.dn != nil { // the float32 backend: oneDNN's bf16 kernels
			if err := be.dn.bf16Check(); err != nil {
				return err
			}
		} else if !isFloat64[T]() {
			return fmt.Errorf("cpu: precision bf16 needs oneDNN, and this binary was built without cgo")
		}
	default:
		return fmt.Errorf("cpu: precision %q: allowed: fp32, bf16", p)
	}
	be.prec = p
	if be.dn != nil {
		be.dn.bf16 = p == ops.BF16
	}
	return nil
}

func isFloat64[T Float]() bool {
	var z T
	_, ok := any(z).(float64)
	return ok
}

// bf16Check returns nil when this CPU has AVX512-BF16 or AMX-BF16 and oneDNN picks a bf16 kernel for every pass
// of the probe convolution; otherwise an error that names what is missing.
func (d *dnnlState) bf16Check() error {
	avx, amx := cpuBF16()
	if !avx && !amx {
		return fmt.Errorf("cpu: precision bf16 needs AVX512-BF16 (cpuinfo flag avx512_bf16) or AMX (amx_bf16, amx_tile), "+
			"and this CPU (%s) has neither: oneDNN would emulate bf16, slower than fp32; use train.precision = \"fp32\"", cpuModel())
	}
	impl, err := d.probe(true)
	if err != nil {
		return fmt.Errorf("cpu: precision bf16: %v", err)
	}
	for i, name := range impl {
		if !bf16Kernel(name) {
			return fmt.Errorf("cpu: precision bf16: oneDNN chose %q for the %s pass of a bf16 convolution, not an AVX512-BF16 "+
				"or AMX kernel (is ONEDNN_MAX_CPU_ISA or DNNL_MAX_CPU_ISA set?); use train.precision = \"fp32\"",
				name, [3]string{"forward", "backward-data", "backward-weights"}[i])
		}
	}
	return nil
}

// bf16Kernel says whether a oneDNN implementation name is a native bf16 kernel: one for avx512_core_bf16 or for
// AMX (avx512_core_amx), not the reference or an emulation on avx512_core.
func bf16Kernel(impl string) bool {
	return strings.Contains(impl, "avx512_core_bf16") || strings.Contains(impl, "amx")
}

// ConvImpl is the oneDNN implementation that runs this backend's convolutions at its precision (the forward pass
// of a 3×3 64→64 layer, e.g. "jit:avx512_core" in fp32, "jit_bf16:avx512_core_bf16" or
// "brgconv:avx512_core_amx_bf16" in bf16); "gemm (float64)" on the float64 backend.
func (be *Backend[T]) ConvImpl() string {
	if be.dn == nil {
		return "gemm (" + be.Name()[len("cpu-"):] + ")"
	}
	impl, err := be.dn.probe(be.dn.bf16)
	if err != nil {
		return "oneDNN: " + err.Error()
	}
	return impl[0]
}

// mmBF16 says whether a linear layer's GEMMs go to oneDNN's bf16 matmul: the float32 backend at precision bf16.
func (be *Backend[T]) mmBF16() bool { return be.prec == ops.BF16 && be.dn != nil }

// bf rounds src to bf16 into the scratch slot when the precision is bf16 and returns it; src itself otherwise.
func (be *Backend[T]) bf(slot int, src []T) []T {
	if be.prec != ops.BF16 || src == nil {
		return src
	}
	be.bfs[slot] = grow(be.bfs[slot], len(src))
	roundBF16To(be.bfs[slot], src)
	return be.bfs[slot]
}

// cpuModel is /proc/cpuinfo's model name, or "unknown model".
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown model"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown model"
}
