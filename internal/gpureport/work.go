package gpureport

import (
	"fmt"
	"sort"
	"strings"

	"github.com/ddpmgo/ddpm/cuda"
)

// Launch is one recorded kernel launch, or a driver operation of the step (a fill, Kernel "Memset32", or a copy,
// "DtoD", "HtoD", "DtoH") with its byte count as its one argument.
type Launch struct {
	Kernel      string
	Grid, Block cuda.Dim3
	Smem        int
	Args        []cuda.Arg
}

// Blocks is the grid's block count; Threads the block's thread count.
func (l Launch) Blocks() int  { return max(l.Grid.X, 1) * max(l.Grid.Y, 1) * max(l.Grid.Z, 1) }
func (l Launch) Threads() int { return max(l.Block.X, 1) * max(l.Block.Y, 1) * max(l.Block.Z, 1) }

// The driver operations a launch list may hold besides kernels.
const (
	MemsetKernel = cuda.DryMemset
	DtoDKernel   = cuda.DryDtoD
	HtoDKernel   = cuda.DryHtoD
	DtoHKernel   = cuda.DryDtoH
)

// IsDriverOp says whether l is a fill or a copy rather than a kernel.
func (l Launch) IsDriverOp() bool {
	switch l.Kernel {
	case MemsetKernel, DtoDKernel, HtoDKernel, DtoHKernel:
		return true
	}
	return false
}

// Work is what one launch must do, on paper.
type Work struct {
	// FLOPs is the op's floating-point work by its definition (a multiply-add counts 2): for the weight gradient
	// ops.ConvShape.FLOPs (every tap, padding included), for the forward and backward-data convolutions and GEMMs
	// 2·M·N·K of the GEMM as launched (convIgemm says what that adds); elementwise and reduction kernels count a
	// nominal few operations per element (they are bound by memory), copies and packs none.
	FLOPs float64
	// FMAs is, for the tiled GEMM kernels (Tiled true), the multiply-adds their tiles execute: M, N and K rounded up
	// to the tile (BM, BN, BK), and the zero taps of a strided backward-data GEMM included. It sets the compute time.
	FMAs  float64
	Tiled bool
	// Bytes is the least DRAM traffic: each input read once, each output written once, an accumulated output read
	// and written (as cuda/flops_test.go counts).
	Bytes float64
}

// workFn maps a launch to its work; an error names what does not fit (arguments, grid).
type workFn func(l Launch) (Work, error)

// gemmTile is the block tile of the kernels built on kernels/gemm_tile.cuh (GEMM_BM × GEMM_BN, k-step GEMM_BK).
type gemmTile struct{ BM, BN, BK int }

var tile64 = gemmTile{64, 64, 16}

// tileBF16 is the block tile of gemm_bf16 (kernels/linear_bf16.cu: GBF_BM × GBF_BN, k-step GBF_BK).
var tileBF16 = gemmTile{64, 64, 32}

// works is the one place that knows each kernel's arguments (kernels/*.cu): every kernel a step launches must have
// an entry, or the report fails (WorkOf).
var works = map[string]workFn{}

func init() {
	for _, prec := range []string{"f32", "tf32", "bf16"} {
		for _, bm := range []int{64, 128} {
			for _, tp := range []string{"k1", "kn"} {
				name := fmt.Sprintf("conv2d_igemm_%s_m%d_%s", prec, bm, tp)
				works[name] = convIgemm(igTile(prec, bm), packedBytes(prec))
			}
			works[fmt.Sprintf("conv2d_wgrad_%s_m%d", prec, bm)] = convWgrad(igTile(prec, bm), packedBytes(prec))
		}
	}
	// The tests' probes of the tensor-core instructions (kernels/tc_probe.cu): no step launches them.
	for _, k := range []string{"tc_probe_cp_async", "tc_probe_ldmatrix", "tc_probe_ldmatrix_mma", "tc_probe_mma",
		"tc_probe_mma_k4", "tc_probe_mma_bf16", "tc_probe_cvt_bf16", "tc_probe_ldmatrix_b16",
		"tc_probe_ldmatrix_mma_bf16"} {
		works[k] = func(l Launch) (Work, error) {
			return Work{}, fmt.Errorf("a test probe of kernels/tc_probe.cu inside the training step")
		}
	}
	// conv2d_pack_act_f32(N, round, job0, job1, job2, part, db, dchan, ld, tickets) and conv2d_pack_act_bf16 (the
	// same without round), job i = (in, out, C, H, W, Cp, Hp, Wp, off, Z), grid.y of them, one block per packed row
	// (n, a) of each: each job's in read once (at most; backward's two jobs over dy each count their read), out
	// [N][Hp][Wp][Cp] written (floats, or bfloat16 for _bf16); with db or dchan, the last job's per-row partials
	// [N·H][C] written (the rows' sums come from the in just read: counted once), then read by the last block for db
	// and by each sample's last block for dchan, each accumulated.
	for prec, es := range map[string]float64{"f32": 4, "bf16": 2} {
		first := 2 // job 0's first argument
		if prec == "bf16" {
			first = 1
		}
		works["conv2d_pack_act_"+prec] = func(l Launch) (Work, error) {
			n, err := argInt(l, 0)
			if err != nil {
				return Work{}, err
			}
			jobs := max(l.Grid.Y, 1)
			if jobs > 3 {
				return Work{}, fmt.Errorf("grid y %d: more than 3 packing jobs", jobs)
			}
			var wk Work
			rows := 0.0
			for j := range jobs {
				v, err := ints(l, first+10*j+2, first+10*j+3, first+10*j+4, first+10*j+5, first+10*j+6, first+10*j+7)
				if err != nil {
					return Work{}, err
				}
				c, h, w, cp, hp, wp := v[0], v[1], v[2], v[3], v[4], v[5]
				rows = max(rows, n*hp)
				wk.Bytes += 4*n*c*h*w + es*n*hp*wp*cp
				if j < jobs-1 {
					continue
				}
				db, dchan := !isNull(l, first+31), !isNull(l, first+32)
				if db || dchan { // the per-row sums, written
					wk.FLOPs = n * c * h * w
					wk.Bytes += 4 * n * h * c
				}
				if db { // read by the last block; db read and written
					wk.FLOPs += n * h * c
					wk.Bytes += 4 * (n*h*c + 2*c)
				}
				if dchan { // read by each sample's last block; dchan read and written
					wk.FLOPs += n * h * c
					wk.Bytes += 4 * (n*h*c + 2*n*c)
				}
			}
			if float64(max(l.Grid.X, 1)) != rows {
				return Work{}, fmt.Errorf("grid %d is not the jobs' largest N·Hp = %v", l.Grid.X, rows)
			}
			return wk, nil
		}
		// conv2d_pack_w_f32(w, out, Cout, Cin, KK, Cp, flip, round) and conv2d_pack_w_bf16 (without round): w read,
		// out [rows][KK][Cp] written (rows = Cout, or Cin when flipped; floats, or bfloat16 for _bf16).
		works["conv2d_pack_w_"+prec] = func(l Launch) (Work, error) {
			v, err := ints(l, 2, 3, 4, 5, 6)
			if err != nil {
				return Work{}, err
			}
			cout, cin, kk, cp, flip := v[0], v[1], v[2], v[3], v[4]
			rows := cout
			if flip != 0 {
				rows = cin
			}
			return Work{Bytes: 4*cout*cin*kk + es*rows*kk*cp}, nil
		}
		// conv2d_pack_w_batch_f32(table, entries, wfloats, packed, round) and conv2d_pack_w_batch_bf16 (without
		// round): every conv weight of a forward pass in both layouts; each source weight read once (wfloats; its
		// two layouts' reads meet in the cache), the packed elements written, the table (40 bytes an entry) read.
		works["conv2d_pack_w_batch_"+prec] = func(l Launch) (Work, error) {
			v, err := ints(l, 1, 2, 3)
			if err != nil {
				return Work{}, err
			}
			return Work{Bytes: 40*v[0] + 4*v[1] + es*v[2]}, nil
		}
	}
	works["gemm_f32"] = gemm(tile64)
	works["gemm_bf16"] = gemm(tileBF16)

	// conv2d_bias_grad_f32(dy, db, N, Cout, OHW)
	works["conv2d_bias_grad_f32"] = func(l Launch) (Work, error) {
		v, err := ints(l, 2, 3, 4)
		e := v[0] * v[1] * v[2]
		return Work{FLOPs: e, Bytes: 4 * (e + 2*v[1])}, err
	}
	// linear_bias_grad_f32(dy, db, part, n, out, chunk, tickets), grid.y splits of the rows: dy read; db read and
	// written; with several splits (part not null) a partial sum per split and column written, then read and added
	// by each column block's last block.
	works["linear_bias_grad_f32"] = func(l Launch) (Work, error) {
		n, out, err := ints2(l, 3, 4)
		w := Work{FLOPs: n * out, Bytes: 4 * (n*out + 2*out)}
		if s := float64(max(l.Grid.Y, 1)); !isNull(l, 2) {
			w.FLOPs += s * out
			w.Bytes += 4 * 2 * s * out
		}
		return w, err
	}

	// Elementwise over n = the last integer argument: floats read, floats written (an accumulated one counts in
	// both), nominal FLOPs per element.
	elem := func(nIdx int, reads, writes, flops float64) workFn {
		return func(l Launch) (Work, error) {
			n, err := argInt(l, nIdx)
			return Work{FLOPs: flops * n, Bytes: 4 * (reads + writes) * n}, err
		}
	}
	works["add_f32"] = elem(3, 2, 1, 1)                              // (a, b, y, n)
	works["axpy_f32"] = elem(3, 2, 1, 2)                             // (alpha, x, y, n): y += αx
	works["scale_f32"] = elem(2, 1, 1, 1)                            // (alpha, x, n)
	works["silu_fwd_f32"] = elem(2, 1, 1, 4)                         // (x, y, n)
	works["silu_bwd_f32"] = elem(3, 3, 1, 8)                         // (x, dy, dx, n): dx +=
	works["mse_bwd_f32"] = elem(4, 3, 1, 3)                          // (a, b, da, c, n, accumulate): da +=
	works["adamw_f32"] = elem(4, 4, 3, 15)                           // (p, g, m, v, n, …)
	works["adamw_ctl_f32"] = elem(4, 4, 4, 15)                       // (p, g, m, v, n, …, w, settings): g zeroed
	works["ema_f32"] = elem(3, 2, 1, 3)                              // (e, p, decay, n)
	works["ema_ctl_f32"] = elem(2, 2, 1, 3)                          // (e, p, n, w, settings)
	works["rng_normal_f32"] = elem(1, 0, 1, 0)                       // (y, n, seed, stream, offset): integer Philox
	works["rng_uniform_f32"] = elem(1, 0, 1, 0)                      // (y, n, seed, stream, offset)
	works["timesteps_f32"] = elem(1, 0, 1, 0)                        // (t, n, seed, stream, offset, T)
	works["ddim_f32"] = elem(4, 3, 1, 10)                            // (xt, eps_hat, z, out, n, …)
	works["sampler_step_f32"] = elem(5, 4, 1, 12)                    // (x, e, z, p, out, n, …): at most 4 reads
	works["timestep_embedding_f32"] = func(l Launch) (Work, error) { // (t, y, n, dim)
		n, dim, err := ints2(l, 2, 3)
		return Work{FLOPs: 4 * n * dim, Bytes: 4 * (n + n*dim)}, err
	}
	// dropout_f32(x, y, n, rate, scale, seed, offset, accumulate)
	works["dropout_f32"] = func(l Launch) (Work, error) {
		n, acc, err := ints2(l, 2, 7)
		return Work{FLOPs: n, Bytes: 4 * n * (2 + acc)}, err
	}
	// qsample_f32(sqrt_ab, sqrt_1mab, t, x0, eps, xt, n, d, T)
	works["qsample_f32"] = func(l Launch) (Work, error) {
		n, d, err := ints2(l, 6, 7)
		return Work{FLOPs: 3 * n * d, Bytes: 4 * (3*n*d + n)}, err
	}
	// posterior_f32(ra, rm, c1, c2, sigma, t, xt, eps_hat, z, out, n, d, T, clip)
	works["posterior_f32"] = func(l Launch) (Work, error) {
		n, d, err := ints2(l, 10, 11)
		return Work{FLOPs: 10 * n * d, Bytes: 4 * (4*n*d + n)}, err
	}
	// gather_epoch_u8_f32(data, order, out, batch, N, C, H, W, k0, flip, seed, stream, flip_off): uint8 in, float out
	works["gather_epoch_u8_f32"] = func(l Launch) (Work, error) {
		v, err := ints(l, 3, 5, 6, 7)
		e := v[0] * v[1] * v[2] * v[3]
		return Work{FLOPs: e, Bytes: e + 4*e + 4*v[0]}, err
	}

	// groupnorm_fwd_f32(x, gamma, beta, y, stats, C, HW, G, eps), grid N·G
	works["groupnorm_fwd_f32"] = func(l Launch) (Work, error) {
		v, err := ints(l, 5, 6, 7)
		if err != nil {
			return Work{}, err
		}
		n, err := gridDiv(l, v[2])
		e := n * v[0] * v[1]
		return Work{FLOPs: 8 * e, Bytes: 4 * (2*e + 2*v[0] + 2*n*v[2])}, err
	}
	// groupnorm_silu_fwd_f32: groupnorm_fwd_f32's arguments, and SiLU of each y (about 4 more FLOPs per element)
	works["groupnorm_silu_fwd_f32"] = func(l Launch) (Work, error) {
		w, err := works["groupnorm_fwd_f32"](l)
		v, _ := ints(l, 5, 6, 7)
		n, _ := gridDiv(l, v[2])
		w.FLOPs += 4 * n * v[0] * v[1]
		return w, err
	}
	// groupnorm_bwd_f32(x, gamma, stats, dy, dx, sums, N, C, HW, G, accumulate, dgamma, dbeta, tickets, res): x and
	// dy read, dx accumulated (or only written) when given, with res read and added when given, per-(n, c) sums
	// written when given; then, by the last block, the sums read and added over n into dgamma and dbeta (each
	// accumulated when given)
	works["groupnorm_bwd_f32"] = gnBwd(4, 5, 6, 12)
	// groupnorm_silu_bwd_f32(x, gamma, beta, stats, dy, dx, sums, N, C, HW, G, accumulate, dgamma, dbeta, tickets,
	// res):
	// as groupnorm_bwd_f32, with n and the SiLU gradient recomputed in both passes (about 2×8 more FLOPs per element)
	works["groupnorm_silu_bwd_f32"] = gnBwd(5, 6, 7, 28)

	// concat_f32(a, b, y, n, ca, cb, hw)
	works["concat_f32"] = func(l Launch) (Work, error) {
		v, err := ints(l, 3, 4, 5, 6)
		e := v[0] * (v[1] + v[2]) * v[3]
		return Work{Bytes: 8 * e}, err
	}
	// concat_bwd_f32(dy, da, db, n, ca, cb, hw): each given part accumulated
	works["concat_bwd_f32"] = func(l Launch) (Work, error) {
		v, err := ints(l, 3, 4, 5, 6)
		a, b := v[0]*v[1]*v[3], v[0]*v[2]*v[3]
		bytes := a + b
		if !isNull(l, 1) {
			bytes += 2 * a
		}
		if !isNull(l, 2) {
			bytes += 2 * b
		}
		return Work{FLOPs: a + b, Bytes: 4 * bytes}, err
	}
	// add_channel_f32(x, p, y, total, hw, C, ld)
	works["add_channel_f32"] = func(l Launch) (Work, error) {
		t, hw, err := ints2(l, 3, 4)
		if hw == 0 {
			return Work{}, fmt.Errorf("hw = 0")
		}
		return Work{FLOPs: t, Bytes: 4 * (2*t + t/hw)}, err
	}
	// channel_sum_f32(dy, dp, rows, hw, C, ld): dp accumulated
	works["channel_sum_f32"] = func(l Launch) (Work, error) {
		r, hw, err := ints2(l, 2, 3)
		return Work{FLOPs: r * hw, Bytes: 4 * (r*hw + 2*r)}, err
	}
	// transpose_f32(x, y, R, C, accumulate), grid.z matrices
	works["transpose_f32"] = func(l Launch) (Work, error) {
		v, err := ints(l, 2, 3, 4)
		e := float64(max(l.Grid.Z, 1)) * v[0] * v[1]
		w := Work{FLOPs: v[2] * e, Bytes: 4 * e * (2 + v[2])}
		if !isNull(l, 5) { // res, read and added
			w.FLOPs += e
			w.Bytes += 4 * e
		}
		return w, err
	}
	// attention_softmax_f32(p, rows, L): p read and written; _bwd(p, ds, rows, L): p read, ds read and written
	works["attention_softmax_f32"] = func(l Launch) (Work, error) {
		r, L, err := ints2(l, 1, 2)
		return Work{FLOPs: 5 * r * L, Bytes: 4 * 2 * r * L}, err
	}
	works["attention_softmax_bwd_f32"] = func(l Launch) (Work, error) {
		r, L, err := ints2(l, 2, 3)
		return Work{FLOPs: 4 * r * L, Bytes: 4 * 3 * r * L}, err
	}
	// upsample2x_f32(x, y, nc, h, w); upsample2x_bwd_f32(dy, dx, nc, h, w): dx accumulated
	works["upsample2x_f32"] = func(l Launch) (Work, error) {
		v, err := ints(l, 2, 3, 4)
		e := v[0] * v[1] * v[2]
		return Work{Bytes: 4 * 5 * e}, err
	}
	works["upsample2x_bwd_f32"] = func(l Launch) (Work, error) {
		v, err := ints(l, 2, 3, 4)
		e := v[0] * v[1] * v[2]
		return Work{FLOPs: 4 * e, Bytes: 4 * 6 * e}, err
	}

	// reduce_partial_f32(a, b, partial, n, mode, scale, out, tickets): mode 1 Σa², mode 2 Σ(a−b)²; one double per
	// block written, then read and added by the last block, out written
	works["reduce_partial_f32"] = func(l Launch) (Work, error) {
		n, mode, err := ints2(l, 3, 4)
		g := float64(l.Blocks())
		return Work{FLOPs: 2*mode*n + g, Bytes: 4*mode*n + 2*8*g + 4}, err
	}
	// step_control_f32(scalars, w, A, max_norm, sticky, reset): one thread, a few scalars
	works["step_control_f32"] = func(l Launch) (Work, error) {
		a, err := argInt(l, 2)
		return Work{FLOPs: 32, Bytes: 4*(1+a) + 2*64}, err
	}
	works[MemsetKernel] = func(l Launch) (Work, error) {
		b, err := argInt(l, 0)
		return Work{Bytes: b}, err
	}
	works[DtoDKernel] = func(l Launch) (Work, error) { // read and written
		b, err := argInt(l, 0)
		return Work{Bytes: 2 * b}, err
	}
	// A copy between host and device inside a step is a bug (train's launch golden refuses it): no cost is given.
	for _, k := range []string{HtoDKernel, DtoHKernel} {
		works[k] = func(l Launch) (Work, error) {
			return Work{}, fmt.Errorf("a copy between host and device inside the training step")
		}
	}
}

// WorkOf is the work of one launch; a kernel without an entry in the mapping is an error (the report must not skip
// a launch).
func WorkOf(l Launch) (Work, error) {
	f, ok := works[l.Kernel]
	if !ok {
		return Work{}, fmt.Errorf("kernel %s has no work mapping: add its FLOPs and bytes to internal/gpureport/work.go", l.Kernel)
	}
	w, err := f(l)
	if err != nil {
		return Work{}, fmt.Errorf("%s %s: %w", l.Kernel, argString(l), err)
	}
	return w, nil
}

// MappedKernels lists the kernels the mapping knows.
func MappedKernels() []string {
	var ks []string
	for k := range works {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// igTile is the block tile of conv2d_igemm_* and conv2d_wgrad_* (kernels/igemm.cuh): BM × IG_BN, k-step IG_BK_F32,
// IG_BK_TC or IG_BK_BF16.
func igTile(prec string, bm int) gemmTile {
	switch prec {
	case "f32":
		return gemmTile{bm, 128, 8}
	case "bf16":
		return gemmTile{bm, 128, 64}
	}
	return gemmTile{bm, 128, 32}
}

// packedBytes is the size of an element of the packed operands that the GEMM kernels of a precision read: bfloat16
// for bf16 (conv2d_pack_*_bf16), floats otherwise.
func packedBytes(prec string) float64 {
	if prec == "bf16" {
		return 2
	}
	return 4
}

// splitK checks that grid.z is the number of chunk-long pieces of a k-range of length k and returns the k-indices
// the tiles issue: each piece rounded up to the k-step.
func splitK(l Launch, t gemmTile, k, chunk float64) (float64, error) {
	splits := max(l.Grid.Z, 1)
	if chunk < 1 || ceilDiv(int(k), int(chunk)) != splits {
		return 0, fmt.Errorf("grid.z %d is not the number of %v-chunks of K = %v", splits, chunk, k)
	}
	var issued float64
	for z := 0; z < splits; z++ {
		issued += pad(min(chunk, k-float64(z)*chunk), t.BK)
	}
	return issued, nil
}

// convIgemm: conv2d_igemm_*(in, wk, bias, out, part, tickets, M, Npix, OH, OW, Hin, Win, S, K, Cp, kchunk, mode,
// chan, ld, res), the forward (M = Cout over x packed NHWC) and backward-data (M = Cin over dy spread and padded,
// stride 1) K-major GEMM: N = Npix = images·OH·OW, k over K²·Cp, cut into grid.z chunks of kchunk. FLOPs are the
// GEMM's as launched, 2·M·Npix·K²·Cp: the launch does not carry the convolution's true channel count (Cp is it padded,
// as cuda's convChannels says) nor, for backward-data, its stride (the taps on the zeros between dy's elements are
// counted). Bytes: the packed input and weights once (es bytes per element: packedBytes), the output written (mode
// set, + the bias, the channel addend and the residual where given) or read and written (add), and with grid.z > 1
// chunks the partials too (splitPartials).
func convIgemm(t gemmTile, es float64) workFn {
	return func(l Launch) (Work, error) {
		v, err := ints(l, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16)
		if err != nil {
			return Work{}, err
		}
		m, npix, oh, ow, hin, win, k, cp, chunk, mode := v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9]
		kk := k * k * cp
		if oh < 1 || ow < 1 || int(npix)%int(oh*ow) != 0 {
			return Work{}, fmt.Errorf("Npix %v is not a whole number of %vx%v images", npix, oh, ow)
		}
		issued, err := splitK(l, t, kk, chunk)
		if err != nil {
			return Work{}, err
		}
		if err := checkGrid(l, t, m, npix, max(l.Grid.Z, 1)); err != nil {
			return Work{}, err
		}
		w := Work{FLOPs: 2 * m * npix * kk, FMAs: pad(m, t.BM) * pad(npix, t.BN) * issued, Tiled: true,
			Bytes: es*(npix/(oh*ow)*hin*win*cp+m*kk) + 4*(1+mode)*m*npix}
		if mode == 0 && !isNull(l, 2) {
			w.Bytes += 4 * m
		}
		if mode == 0 && !isNull(l, 17) { // the epilogue's channel addend: one per (image, m), read
			w.FLOPs += m * npix
			w.Bytes += 4 * m * npix / (oh * ow)
		}
		if mode == 0 && !isNull(l, 19) { // the epilogue's residual: the output's size, read
			w.FLOPs += m * npix
			w.Bytes += 4 * m * npix
		}
		splitPartials(l, &w, m*npix)
		return w, nil
	}
}

// splitPartials adds to w what a GEMM split into grid.z > 1 chunks does beyond the unsplit one for an output of n
// elements (kernels/conv2d.cu, splitk_last): each chunk's partials written, then read and added by each tile's last
// block.
func splitPartials(l Launch, w *Work, n float64) {
	if z := float64(max(l.Grid.Z, 1)); z > 1 {
		w.FLOPs += z * n
		w.Bytes += 4 * 2 * z * n
	}
}

// convWgrad: conv2d_wgrad_*(dyh, xp, out, part, tickets, Cout, Coutp, Cin, Cinp, K, S, Hp, Wp, OH, OW, Npix, kchunk,
// mode), the backward-weight MN-major GEMM: M = Cout, N = K²·Cinp, k over the Npix pixels in grid.z chunks of kchunk.
// FLOPs 2·Cout·K²·Cin·Npix (ops.ConvShape.FLOPs); bytes: packed dy and x once (es bytes per element: packedBytes),
// dw read and written (add), and with grid.z > 1 chunks the partials too (splitPartials).
func convWgrad(t gemmTile, es float64) workFn {
	return func(l Launch) (Work, error) {
		v, err := ints(l, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17)
		if err != nil {
			return Work{}, err
		}
		cout, coutp, cin, cinp, k, hp, wp, oh, ow, npix, chunk, mode :=
			v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11]
		n := k * k * cinp
		if oh < 1 || ow < 1 || int(npix)%int(oh*ow) != 0 {
			return Work{}, fmt.Errorf("Npix %v is not a whole number of %vx%v images", npix, oh, ow)
		}
		issued, err := splitK(l, t, npix, chunk)
		if err != nil {
			return Work{}, err
		}
		if err := checkGrid(l, t, cout, n, max(l.Grid.Z, 1)); err != nil {
			return Work{}, err
		}
		dw := cout * cin * k * k
		w := Work{FLOPs: 2 * dw * npix, FMAs: pad(cout, t.BM) * pad(n, t.BN) * issued, Tiled: true,
			Bytes: es*(npix*coutp+npix/(oh*ow)*hp*wp*cinp) + 4*(1+mode)*dw}
		splitPartials(l, &w, dw)
		return w, nil
	}
}

// gemm: gemm_f32 or gemm_bf16(A, B, C, bias, M, N, K, a_sm, a_sk, b_sk, b_sn, c_sm, zdiv, a_s1, a_s2, b_s1, b_s2,
// c_s1, c_s2, alpha, accumulate, ax, ay, act), grid.z matrices; the fused SiLU (act 1: ay written; act 2: ax read,
// ay read and written) over C's elements.
func gemm(t gemmTile) workFn {
	return func(l Launch) (Work, error) {
		v, err := ints(l, 4, 5, 6, 20, 23)
		if err != nil {
			return Work{}, err
		}
		m, n, k, acc, act := v[0], v[1], v[2], v[3], v[4]
		z := max(l.Grid.Z, 1)
		if err := checkGrid(l, t, m, n, z); err != nil {
			return Work{}, err
		}
		b := float64(z)
		bytes := 4 * b * (m*k + k*n + (1+acc)*m*n)
		if !isNull(l, 3) {
			bytes += 4 * n
		}
		flops := 2 * b * m * n * k
		switch act { // SiLU's FLOPs as silu_fwd_f32's and silu_bwd_f32's (elem)
		case 1:
			bytes += 4 * b * m * n
			flops += 4 * b * m * n
		case 2:
			bytes += 4 * 3 * b * m * n
			flops += 8 * b * m * n
		}
		return Work{FLOPs: flops, FMAs: b * pad(m, t.BM) * pad(n, t.BN) * pad(k, t.BK), Tiled: true,
			Bytes: bytes}, nil
	}
}

// argInt reads integer argument i (signed or unsigned, 4 or 8 bytes).
func argInt(l Launch, i int) (float64, error) {
	if i >= len(l.Args) {
		return 0, fmt.Errorf("argument %d of %d missing", i, len(l.Args))
	}
	a := l.Args[i]
	switch {
	case a.Kind() == 'i' && a.Size() == 4:
		return float64(int32(uint32(a.Bits()))), nil
	case a.Kind() == 'i' && a.Size() == 8:
		return float64(int64(a.Bits())), nil
	case a.Kind() == 'u':
		return float64(a.Bits()), nil
	}
	return 0, fmt.Errorf("argument %d is %v, not an integer", i, a)
}

func ints(l Launch, idx ...int) ([]float64, error) {
	v := make([]float64, len(idx))
	for j, i := range idx {
		x, err := argInt(l, i)
		if err != nil {
			return v, err
		}
		v[j] = x
	}
	return v, nil
}

func ints2(l Launch, i, j int) (float64, float64, error) {
	v, err := ints(l, i, j)
	return v[0], v[1], err
}

func isNull(l Launch, i int) bool {
	return i >= len(l.Args) || (l.Args[i].Kind() == 'p' && l.Args[i].Bits() == 0)
}

// gridDiv is grid.x / d, which must be whole (a per-(sample, group) grid).
func gridDiv(l Launch, d float64) (float64, error) {
	if d <= 0 || l.Grid.X%int(d) != 0 {
		return 0, fmt.Errorf("grid %d is not a multiple of %v", l.Grid.X, d)
	}
	return float64(l.Grid.X) / d, nil
}

// argString prints a launch as the launch golden does (cuda.Geometry).
func argString(l Launch) string {
	var b strings.Builder
	fmt.Fprintf(&b, "grid=%dx%dx%d block=%dx%dx%d args=", max(l.Grid.X, 1), max(l.Grid.Y, 1), max(l.Grid.Z, 1),
		max(l.Block.X, 1), max(l.Block.Y, 1), max(l.Block.Z, 1))
	b.WriteString(cuda.Geometry(l.Args))
	return b.String()
}

// gnBwd is the work of the group-norm backward kernels: dx and sums at argument indices dxIdx, sumsIdx, then N, C,
// HW, G, accumulate, dgamma, dbeta from nIdx; x and dy read, dx accumulated (read and written) or written when
// given, per-(n, c) sums written when given, then read by the last block and added over n into the given dgamma and
// dbeta (accumulated).
func gnBwd(dxIdx, sumsIdx, nIdx int, flops float64) workFn {
	return func(l Launch) (Work, error) {
		v, err := ints(l, nIdx, nIdx+1, nIdx+2, nIdx+4)
		e, nc := v[0]*v[1]*v[2], v[0]*v[1]
		w := Work{FLOPs: flops * e}
		b := 2 * e
		if !isNull(l, dxIdx) {
			b += (1 + v[3]) * e
		}
		if !isNull(l, sumsIdx) {
			b += 2 * nc
		}
		for _, p := range []int{nIdx + 5, nIdx + 6} {
			if !isNull(l, p) {
				w.FLOPs += nc
				b += nc + 2*v[1]
			}
		}
		if !isNull(l, nIdx+8) { // the residual's gradient, read and added into dx
			w.FLOPs += e
			b += e
		}
		w.Bytes = 4 * b
		return w, err
	}
}

func pad(v float64, to int) float64 { return float64(roundUp(int(v), to)) }

// checkGrid verifies that the launch's grid is the tiling of an M × N GEMM by t, z deep, so that a kernel whose tile
// changed fails here instead of being costed with the old one.
func checkGrid(l Launch, t gemmTile, m, n float64, z int) error {
	want := cuda.Dim3{X: ceilDiv(int(n), t.BN), Y: ceilDiv(int(m), t.BM), Z: z}
	if max(l.Grid.X, 1) != want.X || max(l.Grid.Y, 1) != want.Y || max(l.Grid.Z, 1) != max(want.Z, 1) {
		return fmt.Errorf("grid %dx%dx%d is not the %dx%d tiling of a %vx%v GEMM (%dx%dx%d): update the tile in internal/gpureport/work.go",
			l.Grid.X, l.Grid.Y, l.Grid.Z, t.BM, t.BN, m, n, want.X, want.Y, max(want.Z, 1))
	}
	return nil
}
