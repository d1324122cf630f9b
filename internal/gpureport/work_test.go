package gpureport

import (
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/ddpmgo/ddpm/cuda"
	"github.com/ddpmgo/ddpm/ops"
)

// trace runs f on a backend over the dry driver and returns what it launched: the mapping is tested against the
// real launchers' argument order, not a copy of it. f's a allocates (a fill the trace leaves out); off runs its
// function untraced.
func trace(t *testing.T, tc bool, f func(be *cuda.Backend, a func(n int) ops.Buf, off func(func()))) []Launch {
	t.Helper()
	p := ops.FP32
	if tc {
		p = ops.TF32
	}
	return traceAt(t, p, f)
}

// traceAt is trace at precision p.
func traceAt(t *testing.T, p ops.Precision, f func(be *cuda.Backend, a func(n int) ops.Buf, off func(func()))) []Launch {
	t.Helper()
	d := newDryDriver()
	be, err := cuda.NewBackend(d)
	if err != nil {
		t.Fatal(err)
	}
	if err := be.SetPrecision(p); err != nil {
		t.Fatal(err)
	}
	off := func(g func()) {
		d.on = false
		g()
		d.on = true
	}
	a := func(n int) (b ops.Buf) {
		off(func() { b = be.Alloc(n) })
		return b
	}
	d.on = true
	f(be, a, off)
	return d.launches
}

// want is a launch's expected work; FMAs only for tiled kernels.
type want struct {
	kernel       string
	flops, bytes float64
	fmas         float64
}

func check(t *testing.T, ls []Launch, ws ...want) {
	t.Helper()
	if len(ls) != len(ws) {
		var names []string
		for _, l := range ls {
			names = append(names, l.Kernel)
		}
		t.Fatalf("launched %v, want %d launches", names, len(ws))
	}
	for i, w := range ws {
		l := ls[i]
		if l.Kernel != w.kernel {
			t.Errorf("launch %d is %s, want %s", i, l.Kernel, w.kernel)
			continue
		}
		got, err := WorkOf(l)
		if err != nil {
			t.Errorf("%s: %v", l.Kernel, err)
			continue
		}
		if got.FLOPs != w.flops || got.Bytes != w.bytes || got.FMAs != w.fmas || got.Tiled != (w.fmas > 0) {
			t.Errorf("%s %s: work %+v, want FLOPs %v, bytes %v, FMAs %v", l.Kernel, argString(l), got, w.flops, w.bytes, w.fmas)
		}
	}
}

func TestWorkConv(t *testing.T) {
	// OH = (5+2−3)/2+1 = 3, OW = 4; x padded to 7×9; dy spread and padded to 7×9. Channels packed to Cp = 4 (FP32),
	// or for the TF32 kernels to 16 (two chunks, and 3·Cp ≥ their k-step of 32: cuda's convChannels).
	s := ops.ConvShape{N: 2, Cin: 3, H: 5, W: 7, Cout: 4, K: 3, Stride: 2, Pad: 1}
	for _, tc := range []bool{false, true} {
		prec, bk, cp := "f32", 8.0, 4.0
		if tc {
			prec, bk, cp = "tf32", 32, 16
		}
		xp, k := 2*7*9*cp, 9*cp // packed x (and dy spread and padded), the GEMMs' K
		ls := trace(t, tc, func(be *cuda.Backend, a func(int) ops.Buf, off func(func())) {
			x, w, b, y := a(2*3*35), a(4*27), a(4), a(2*4*12)
			be.Conv2D(s, x, w, b, y)
			be.Conv2DBackward(s, x, w, y, a(2*3*35), a(4*27), a(4))
			be.Conv2DBackward(s, x, w, y, nil, nil, a(4)) // db alone: a kernel of its own
		})
		check(t, ls,
			// x [2,3,5,7] → [2][7][9][Cp]; w → [4][9][Cp].
			want{"conv2d_pack_act_f32", 0, 4 * (210 + xp), 0},
			want{"conv2d_pack_w_f32", 0, 4 * (108 + 4*k), 0},
			// GEMM 4 × 24 × 9·Cp (one chunk) → tiles 64 × 128 × k-steps; packed x, packed w, y and the bias.
			want{"conv2d_igemm_" + prec + "_m64_kn", 2 * 4 * 24 * k, 4 * (xp + 4*k + 96 + 4),
				64 * 128 * pad(k, int(bk))},
			// One launch packs backward's three operands: dy [2,4,3,4] spread by 2 and padded by 1 → [2][7][9][Cp]; x
			// again; dy NHWC [24][Cp], and db: 6 rows' partials of 4 channels written and read, db accumulated.
			want{"conv2d_pack_act_f32", 96 + 24, 4 * (96 + xp + 210 + xp + 96 + 24*cp + 2*24 + 2*4), 0},
			// w flipped → [3][9][Cp].
			want{"conv2d_pack_w_f32", 0, 4 * (108 + 3*k), 0},
			// GEMM 3 × 70 × 9·Cp, dx accumulated; the zero taps of the spread dy counted.
			want{"conv2d_igemm_" + prec + "_m64_kn", 2 * 3 * 70 * k, 4 * (xp + 3*k + 2*210),
				64 * 128 * pad(k, int(bk))},
			// GEMM 4 × 9·Cp × 24 pixels (one chunk), dw accumulated: FLOPs 2·Cout·K²·Cin·pixels.
			want{"conv2d_wgrad_" + prec + "_m64", 2 * 4 * 27 * 24, 4 * (24*cp + xp + 2*108),
				64 * pad(k, 128) * pad(24, int(bk))},
			want{"conv2d_bias_grad_f32", 96, 4 * (96 + 2*4), 0})
	}
	// Split K: 4096 pixels over 2 column tiles → 16 chunks of 256, partials written, then read and added by each
	// tile's last block.
	s2 := ops.ConvShape{N: 16, Cin: 16, H: 16, W: 16, Cout: 32, K: 3, Stride: 1, Pad: 1}
	ls := trace(t, false, func(be *cuda.Backend, a func(int) ops.Buf, off func(func())) {
		x, w, dy := a(16*16*256), a(32*144), a(16*32*256)
		be.Conv2DBackward(s2, x, w, dy, nil, a(32*144), nil)
	})
	fl := 2.0 * 16 * 32 * 256 * 16 * 9
	xp := 16.0 * 18 * 18 * 16
	check(t, ls,
		want{"conv2d_pack_act_f32", 0, 4 * (65536 + xp + 131072 + 131072), 0}, // x and dy, one launch
		want{"conv2d_wgrad_f32_m64", fl + 16*4608, 4 * (131072 + xp + 2*4608 + 2*16*4608), 64 * 256 * 4096})
	// Split K forward with the bias: K = 9·64 = 576 over 1 tile → 2 chunks of 288; the partials summed with b by
	// the tile's last block.
	s3 := ops.ConvShape{N: 2, Cin: 64, H: 6, W: 6, Cout: 8, K: 3, Stride: 1, Pad: 1}
	ls = trace(t, false, func(be *cuda.Backend, a func(int) ops.Buf, off func(func())) {
		be.Conv2D(s3, a(2*64*36), a(8*576), a(8), a(2*8*36))
	})
	check(t, ls,
		want{"conv2d_pack_act_f32", 0, 4 * (4608 + 2*8*8*64), 0},
		want{"conv2d_pack_w_f32", 0, 4 * (4608 + 4608), 0},
		want{"conv2d_igemm_f32_m64_kn", 2*8*72*576 + 2*576, 4 * (2*8*8*64 + 4608 + 576 + 8 + 2*2*576), 64 * 128 * 576})
}

// TestWorkConvBF16: the shape of TestWorkConv on the BF16 kernels, whose packed operands are bfloat16 (2 bytes an
// element, channels padded to Cp = 32: two chunks of 8, and 3·Cp ≥ the k-step of 64).
func TestWorkConvBF16(t *testing.T) {
	s := ops.ConvShape{N: 2, Cin: 3, H: 5, W: 7, Cout: 4, K: 3, Stride: 2, Pad: 1}
	ls := traceAt(t, ops.BF16, func(be *cuda.Backend, a func(int) ops.Buf, off func(func())) {
		x, w, b, y := a(2*3*35), a(4*27), a(4), a(2*4*12)
		be.Conv2D(s, x, w, b, y)
		be.Conv2DBackward(s, x, w, y, a(2*3*35), a(4*27), a(4))
	})
	check(t, ls,
		// x [2,3,5,7] → [2][7][9][32] bfloat16; w → [4][9][32].
		want{"conv2d_pack_act_bf16", 0, 4*210 + 2*4032, 0},
		want{"conv2d_pack_w_bf16", 0, 4*108 + 2*1152, 0},
		// GEMM 4 × 24 × 288; packed x and w, y and the bias.
		want{"conv2d_igemm_bf16_m64_kn", 2 * 4 * 24 * 288, 2*(4032+1152) + 4*(96+4), 64 * 128 * pad(288, 64)},
		// One launch: dy spread and padded → [2][7][9][32]; x packed again for backward-weight, to 64 channels (cuda's
		// wgradCp) → [2][7][9][64]; dy NHWC [24][32], and db (TestWorkConv).
		want{"conv2d_pack_act_bf16", 96 + 24, 4*96 + 2*4032 + 4*210 + 2*8064 + 4*96 + 2*768 + 4*(2*24+2*4), 0},
		// w flipped → [3][9][32].
		want{"conv2d_pack_w_bf16", 0, 4*108 + 2*864, 0},
		want{"conv2d_igemm_bf16_m64_kn", 2 * 3 * 70 * 288, 2*(4032+864) + 4*2*210, 64 * 128 * pad(288, 64)},
		// GEMM 4 × 576 × 24 pixels (9 taps of 64 channels), dw accumulated.
		want{"conv2d_wgrad_bf16_m64", 2 * 4 * 27 * 24, 2*(768+8064) + 4*2*108, 64 * pad(576, 128) * pad(24, 64)})
}

func TestWorkGEMM(t *testing.T) {
	ls := trace(t, false, func(be *cuda.Backend, a func(int) ops.Buf, off func(func())) {
		x, w, b, y := a(35), a(21), a(3), a(15)
		be.Linear(5, 7, 3, x, w, b, y)
		be.LinearBackward(5, 7, 3, x, w, y, a(35), a(21), a(3))
	})
	check(t, ls,
		want{"gemm_f32", 210, 4*(35+21+15) + 4*3, 64 * 64 * 16},   // y = x·wᵀ + b: 5×3×7
		want{"gemm_f32", 210, 4 * (15 + 21 + 2*35), 64 * 64 * 16}, // dx += dy·w: 5×7×3, accumulated
		want{"gemm_f32", 210, 4 * (15 + 35 + 2*21), 64 * 64 * 16}, // dw += dyᵀ·x: 3×7×5
		want{"linear_bias_grad_f32", 15, 4 * (15 + 6), 0})

	as := ops.AttnShape{N: 2, L: 4, Heads: 2, D: 3}
	n, p := 2*4*2*3, 2*2*4*4
	ls = trace(t, false, func(be *cuda.Backend, a func(int) ops.Buf, off func(func())) {
		q, k, v, o, pp := a(n), a(n), a(n), a(n), a(p)
		be.Attention(as, q, k, v, o, pp)
		be.AttentionBackward(as, q, k, v, pp, o, a(n), a(n), a(n))
	})
	// 4 (sample, head) matrices each: S = q·kᵀ 4×4×3, o = P·v 4×3×4; backward dv, dP, dq, dk.
	check(t, ls,
		want{"gemm_f32", 384, 4 * 4 * (12 + 12 + 16), 4 * 64 * 64 * 16},
		want{"attention_softmax_f32", 5 * 64, 4 * 2 * 64, 0},
		want{"gemm_f32", 384, 4 * 4 * (16 + 12 + 12), 4 * 64 * 64 * 16},
		want{"gemm_f32", 384, 4 * 4 * (16 + 12 + 2*12), 4 * 64 * 64 * 16}, // dv += Pᵀ·do: 4×3×4
		want{"gemm_f32", 384, 4 * 4 * (12 + 12 + 16), 4 * 64 * 64 * 16},   // dP = do·vᵀ: 4×4×3
		want{"attention_softmax_bwd_f32", 4 * 64, 4 * 3 * 64, 0},
		want{"gemm_f32", 384, 4 * 4 * (16 + 12 + 2*12), 4 * 64 * 64 * 16}, // dq += dS·k
		want{"gemm_f32", 384, 4 * 4 * (16 + 12 + 2*12), 4 * 64 * 64 * 16}) // dk += dSᵀ·q

	// At bf16 the same GEMMs run gemm_bf16, whose k-step is 32; the bias gradient stays FP32.
	ls = traceAt(t, ops.BF16, func(be *cuda.Backend, a func(int) ops.Buf, off func(func())) {
		x, w, b, y := a(35), a(21), a(3), a(15)
		be.Linear(5, 7, 3, x, w, b, y)
		be.LinearBackward(5, 7, 3, x, w, y, a(35), a(21), a(3))
	})
	check(t, ls,
		want{"gemm_bf16", 210, 4*(35+21+15) + 4*3, 64 * 64 * 32},
		want{"gemm_bf16", 210, 4 * (15 + 21 + 2*35), 64 * 64 * 32},
		want{"gemm_bf16", 210, 4 * (15 + 35 + 2*21), 64 * 64 * 32},
		want{"linear_bias_grad_f32", 15, 4 * (15 + 6), 0})

	// A bias gradient over 1024 rows and 40 columns: 4 splits of 256 rows, partials, then their sum by the last
	// block of each column block, in one launch.
	ls = trace(t, false, func(be *cuda.Backend, a func(int) ops.Buf, off func(func())) {
		be.LinearBackward(1024, 2, 40, a(2048), a(80), a(40960), nil, nil, a(40))
	})
	check(t, ls,
		want{"linear_bias_grad_f32", 40960 + 160, 4 * (40960 + 2*40 + 2*160), 0})
}

func TestWorkGroupNormAndLayout(t *testing.T) {
	s := ops.NormShape{N: 2, C: 4, HW: 5, G: 2, Eps: 1e-5}
	ls := trace(t, false, func(be *cuda.Backend, a func(int) ops.Buf, off func(func())) {
		x, g, b, y, st := a(40), a(4), a(4), a(40), a(8)
		be.GroupNorm(s, x, g, b, y, st)
		be.GroupNormBackward(s, x, g, st, y, a(40), a(4), a(4))
		be.GroupNormBackward(s, x, g, st, y, a(40), nil, nil)
		be.GroupNormSiLU(s, x, g, b, y, st)
		be.GroupNormSiLUBackward(s, x, g, b, st, y, a(40), a(4), a(4))
		be.Concat(2, 3, 1, 5, a(30), a(10), a(40))
		be.ConcatBackward(2, 3, 1, 5, a(40), a(30), a(10))
		be.ConcatBackward(2, 3, 1, 5, a(40), a(30), nil)
		be.AddChannel(2, 3, 5, 3, a(30), a(6), a(30))
		be.ChannelSum(2, 3, 5, 3, a(30), a(6))
		be.Transpose(3, 4, 5, a(60), a(60))
		be.TransposeBackward(3, 4, 5, a(60), a(60))
		be.Upsample2x(2, 3, 4, a(24), a(96))
		be.Upsample2xBackward(2, 3, 4, a(96), a(24))
	})
	check(t, ls,
		want{"groupnorm_fwd_f32", 8 * 40, 4 * (2*40 + 2*4 + 2*4), 0}, // x read, y written, γ, β, the stats
		// x, dy read; dx accumulated; sums written, then read and added into dgamma, dbeta by the last block
		want{"groupnorm_bwd_f32", 12*40 + 16, 4 * (4*40 + 2*8 + 16 + 16), 0},
		want{"groupnorm_bwd_f32", 12 * 40, 4 * 4 * 40, 0},
		want{"groupnorm_silu_fwd_f32", 12 * 40, 4 * (2*40 + 2*4 + 2*4), 0},        // GroupNorm's, and SiLU per element
		want{"groupnorm_silu_bwd_f32", 28*40 + 16, 4 * (4*40 + 2*8 + 16 + 16), 0}, // n and the SiLU gradient recomputed
		want{"concat_f32", 0, 8 * 40, 0},
		want{"concat_bwd_f32", 40, 4 * (40 + 60 + 20), 0},
		want{"concat_bwd_f32", 40, 4 * (40 + 60), 0},
		want{"add_channel_f32", 30, 4 * (60 + 6), 0},
		want{"channel_sum_f32", 30, 4 * (30 + 12), 0},
		want{"transpose_f32", 0, 4 * 2 * 60, 0},
		want{"transpose_f32", 60, 4 * 3 * 60, 0},
		want{"upsample2x_f32", 0, 4 * 5 * 24, 0},
		want{"upsample2x_bwd_f32", 4 * 24, 4 * 6 * 24, 0})
}

func TestWorkElementwiseAndReductions(t *testing.T) {
	ls := trace(t, false, func(be *cuda.Backend, al func(int) ops.Buf, off func(func())) {
		a, b, y := al(1000), al(1000), al(1000)
		be.Add(a, b, y)
		be.Axpy(2, a, y)
		be.Scale(2, y)
		be.SiLU(a, y)
		be.SiLUBackward(a, b, y)
		be.Dropout(0.1, 1, 0, a, y)
		be.DropoutBackward(0.1, 1, 0, a, y)
		out := al(1)
		be.SumSquares(a, out) // 4 blocks of 256
		be.MSE(a, b, out)
		be.MSEBackward(1, a, b, y)
		be.TimestepEmbedding(ops.EmbedShape{N: 4, Dim: 6, FlipSinToCos: true}, al(4), al(24))
		be.Fill(a, 0)
		be.Copy(a, b)
	})
	check(t, ls,
		want{"add_f32", 1000, 12000, 0},
		want{"axpy_f32", 2000, 12000, 0},
		want{"scale_f32", 1000, 8000, 0},
		want{"silu_fwd_f32", 4000, 8000, 0},
		want{"silu_bwd_f32", 8000, 16000, 0},
		want{"dropout_f32", 1000, 8000, 0},
		want{"dropout_f32", 1000, 12000, 0},
		want{"reduce_partial_f32", 2000 + 4, 4000 + 2*8*4 + 4, 0},
		want{"reduce_partial_f32", 4000 + 4, 8000 + 2*8*4 + 4, 0},
		want{"mse_bwd_f32", 3000, 16000, 0},
		want{"timestep_embedding_f32", 96, 4 * (4 + 24), 0},
		want{MemsetKernel, 0, 4000, 0},
		want{DtoDKernel, 0, 8000, 0})
}

func TestWorkOptimNoiseData(t *testing.T) {
	ls := trace(t, false, func(be *cuda.Backend, a func(int) ops.Buf, off func(func())) {
		p, g, m, v, e := a(1000), a(1000), a(1000), a(1000), a(1000)
		be.AdamWStep(ops.AdamW{LR: 1e-3, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, RC1: 1, RC2: 1, GradScale: 1}, p, g, m, v)
		be.EMA(0.99, e, p)
		var sc ops.StepControl
		off(func() {
			sc = be.NewStepControl(ops.StepConfig{A: 2, MaxNorm: 1, Sticky: true, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, Window: 1})
			sc.SetSettings([]ops.StepSettings{{LR: 1e-3, RC1: 1, RC2: 1, EMADecay: 0.99}})
		})
		sc.Update(p, g, m, v, e)
		be.Normal(1, 2, 0, p)
		be.Uniform(1, 2, 0, p)
		be.Timesteps(1, 2, 0, 1000, a(16))
		tab := func() ops.Buf { return a(10) }
		sch := &ops.Schedule{T: 10, SqrtAlphaBar: tab(), SqrtOneMinusAlphaBar: tab(), SqrtRecipAlphaBar: tab(),
			SqrtRecipM1AlphaBar: tab(), PosteriorCoef1: tab(), PosteriorCoef2: tab(), Sigma: tab(), AlphaBar: tab()}
		t2, d20 := a(2), func() ops.Buf { return a(20) }
		be.QSample(sch, 2, 10, t2, d20(), d20(), d20())
		be.Posterior(sch, 2, 10, true, t2, d20(), d20(), d20(), d20())
		be.DDIMStep(0.5, 0.6, 0, true, d20(), d20(), d20(), d20())
		var f ops.Feed
		off(func() {
			var err error
			if f, err = be.NewFeed(make([]uint8, 10*6), 10, 1, 2, 3); err != nil {
				t.Fatal(err)
			}
		})
		f.Gather(0, 0, 4, true, 1, a(24))
	})
	check(t, ls,
		want{"adamw_f32", 15000, 28000, 0},
		want{"ema_f32", 3000, 12000, 0},
		want{"reduce_partial_f32", 2000 + 4, 4000 + 2*8*4 + 4, 0},
		want{"step_control_f32", 32, 4*3 + 128, 0},
		want{"adamw_ctl_f32", 15000, 32000, 0},
		want{"ema_ctl_f32", 3000, 12000, 0},
		want{"rng_normal_f32", 0, 4000, 0},
		want{"rng_uniform_f32", 0, 4000, 0},
		want{"timesteps_f32", 0, 64, 0},
		want{"qsample_f32", 60, 4 * (60 + 2), 0},
		want{"posterior_f32", 200, 4 * (80 + 2), 0},
		want{"ddim_f32", 200, 4 * 4 * 20, 0},
		want{"gather_epoch_u8_f32", 24, 24 + 4*24 + 4*4, 0})
}

// check skips nothing: a copy between host and device has no cost, it is an error.
func TestWorkRefuses(t *testing.T) {
	for _, l := range []Launch{
		{Kernel: HtoDKernel, Args: []cuda.Arg{cuda.I64(64)}},
		{Kernel: "conv2d_fwd_bf16", Grid: cuda.Dim3{X: 1}},
	} {
		if _, err := WorkOf(l); err == nil {
			t.Errorf("%s: no error", l.Kernel)
		}
	}
	// A grid that is not the 64×64 tiling (a kernel whose tile changed) is refused.
	ls := trace(t, false, func(be *cuda.Backend, a func(int) ops.Buf, off func(func())) {
		be.Linear(5, 7, 3, a(35), a(21), nil, a(15))
	})
	ls[0].Grid.Y = 2
	if _, err := WorkOf(ls[0]); err == nil {
		t.Error("gemm_f32 with a grid of two row tiles for 5 rows: no error")
	}
}

// Every kernel in the committed PTX has a work mapping, so no launch of a step can fall through.
func TestEveryKernelIsMapped(t *testing.T) {
	mods, err := FindModules(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	for _, m := range mods {
		for _, e := range m.Info.Entries {
			if _, ok := works[e]; !ok {
				missing = append(missing, m.Path+": "+e)
			}
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("kernels without a work mapping in work.go: %v", missing)
	}
	if _, err := os.Stat(filepath.Join("..", "..", "kernels", "ptx", "sm80")); err != nil {
		t.Fatal(err)
	}
}
