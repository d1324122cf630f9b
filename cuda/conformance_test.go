//go:build !cuda

package cuda

import (
	"fmt"
	"math"
	"math/rand"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/ddpmgo/ddpm/cpu"
	"github.com/ddpmgo/ddpm/ops"
	"github.com/ddpmgo/ddpm/ops/opstest"
	"github.com/ddpmgo/ddpm/rng"
)

// The conformance suite: every kernel of kernels/*.cu runs on the emulator (the same source nvcc compiles for the
// GPU, through the same launchers) and is compared with its CPU twin (package cpu, float64 build) on random inputs.
// Every allocation of the emulator is wrapped in guard bands that are checked after each launch, so a kernel
// writing outside its outputs fails the case. RNG draws must match exactly; everything else by normalized error
//   ‖got − want‖₂ / max(‖want‖₂, 1e-30)
// against the tolerance written beside the case.

// firstFamily is the part of ops.Backend this backend implements so far; cpu.Backend has all of it.
type firstFamily interface {
	Alloc(n int) ops.Buf
	Upload(dst ops.Buf, src []float32)
	Download(dst []float32, src ops.Buf)
	Sync() error
	Add(a, b, y ops.Buf)
	Axpy(alpha float32, x, y ops.Buf)
	Scale(alpha float32, x ops.Buf)
	SiLU(x, y ops.Buf)
	SiLUBackward(x, dy, dx ops.Buf)
	MSE(a, b, loss ops.Buf)
	MSEBackward(scale float32, a, b, da ops.Buf)
	SumSquares(x, out ops.Buf)
	AdamWStep(h ops.AdamW, p, g, m, v ops.Buf)
	EMA(decay float32, e, p ops.Buf)
	Normal(seed uint64, stream uint32, offset uint64, y ops.Buf)
	QSample(sch *ops.Schedule, n, d int, t, x0, eps, xt ops.Buf)
	Posterior(sch *ops.Schedule, n, d int, clip bool, t, xt, epsHat, z, out ops.Buf)
	DDIMStep(alphaBar, alphaBarPrev, eta float32, clip bool, xt, epsHat, z, out ops.Buf)
}

var _ firstFamily = (*Backend)(nil)

// env gives a case its inputs: the same seed yields the same values on both backends.
type env struct {
	be  firstFamily
	rnd *rand.Rand
}

func (e *env) buf(vals []float32) ops.Buf {
	b := e.be.Alloc(len(vals))
	e.be.Upload(b, vals)
	return b
}

// randn returns n values uniform in [lo, hi).
func (e *env) rand(n int, lo, hi float64) ops.Buf {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(lo + (hi-lo)*e.rnd.Float64())
	}
	return e.buf(v)
}

func (e *env) out(bs ...ops.Buf) [][]float32 {
	var r [][]float32
	for _, b := range bs {
		h := make([]float32, b.Len())
		e.be.Download(h, b)
		r = append(r, h)
	}
	return r
}

// schedule uploads a linear-β schedule of T steps (β from 1e-4 to 0.02, Ho et al.), computed in float64.
func (e *env) schedule(T int, sigmaTilde bool) *ops.Schedule {
	tabs := make([][]float32, 8)
	for i := range tabs {
		tabs[i] = make([]float32, T)
	}
	abar := 1.0
	for t := 0; t < T; t++ {
		beta := 1e-4 + (0.02-1e-4)*float64(t)/float64(max(T-1, 1))
		prev := abar
		abar *= 1 - beta
		tabs[0][t] = float32(math.Sqrt(abar))
		tabs[1][t] = float32(math.Sqrt(1 - abar))
		tabs[2][t] = float32(math.Sqrt(1 / abar))
		tabs[3][t] = float32(math.Sqrt(1/abar - 1))
		tabs[4][t] = float32(math.Sqrt(prev) * beta / (1 - abar))
		tabs[5][t] = float32(math.Sqrt(1-beta) * (1 - prev) / (1 - abar))
		if sigmaTilde {
			tabs[6][t] = float32(math.Sqrt(beta * (1 - prev) / (1 - abar)))
		} else {
			tabs[6][t] = float32(math.Sqrt(beta))
		}
		tabs[7][t] = float32(abar)
	}
	return &ops.Schedule{T: T, SqrtAlphaBar: e.buf(tabs[0]), SqrtOneMinusAlphaBar: e.buf(tabs[1]),
		SqrtRecipAlphaBar: e.buf(tabs[2]), SqrtRecipM1AlphaBar: e.buf(tabs[3]), PosteriorCoef1: e.buf(tabs[4]),
		PosteriorCoef2: e.buf(tabs[5]), Sigma: e.buf(tabs[6]), AlphaBar: e.buf(tabs[7])}
}

// timesteps returns n integer timesteps in [0, T), always including 0 and T−1 when n ≥ 2.
func (e *env) timesteps(n, T int) ops.Buf {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(e.rnd.Intn(T))
	}
	if n >= 2 {
		v[0], v[n-1] = 0, float32(T-1)
	}
	return e.buf(v)
}

type confCase struct {
	name   string
	exact  bool    // compare bits (RNG draws)
	tol    float64 // normalized error bound, when not exact
	reason string  // why this tolerance
	run    func(e *env) [][]float32
}

// Sizes around the launch geometry: one element, one block (256) ± 1, several blocks, and past the reduction's
// grid cap (1024 blocks × 256 threads).
var confSizes = []int{1, 255, 257, 5000, 300000}

func confCases() []confCase {
	var cs []confCase
	for _, n := range confSizes {
		cs = append(cs,
			confCase{fmt.Sprintf("Add/%d", n), false, 1e-7, "one float32 rounding on both sides", func(e *env) [][]float32 {
				a, b, y := e.rand(n, -3, 3), e.rand(n, -3, 3), e.be.Alloc(n)
				e.be.Add(a, b, y)
				e.be.Add(a, b, b) // aliasing y = b
				return e.out(y, b)
			}},
			confCase{fmt.Sprintf("Axpy+Scale/%d", n), false, 1e-6, "two roundings; nvcc may fuse a·x+y into one FMA", func(e *env) [][]float32 {
				x, y := e.rand(n, -3, 3), e.rand(n, -3, 3)
				e.be.Axpy(-0.7, x, y)
				e.be.Scale(1.3, y)
				return e.out(y)
			}},
			confCase{fmt.Sprintf("SiLU/%d", n), false, 1e-6, "expf differs from the float64 exp by ≤ 2 ulp on the GPU", func(e *env) [][]float32 {
				x, y := e.rand(n, -12, 12), e.be.Alloc(n)
				dy, dx := e.rand(n, -1, 1), e.rand(n, -1, 1)
				e.be.SiLU(x, y)
				e.be.SiLUBackward(x, dy, dx)
				return e.out(y, dx)
			}},
			confCase{fmt.Sprintf("MSE/%d", n), false, 1e-6, "float64 sums in another order, rounded to float32", func(e *env) [][]float32 {
				a, b, loss, da := e.rand(n, -2, 2), e.rand(n, -2, 2), e.be.Alloc(1), e.rand(n, -1, 1)
				e.be.MSE(a, b, loss)
				e.be.MSEBackward(0.5, a, b, da)
				return e.out(loss, da)
			}},
			confCase{fmt.Sprintf("SumSquares/%d", n), false, 1e-6, "float64 sums in another order, rounded to float32", func(e *env) [][]float32 {
				x, out := e.rand(n, -5, 5), e.be.Alloc(1)
				e.be.SumSquares(x, out)
				return e.out(out)
			}},
			confCase{fmt.Sprintf("AdamW/%d", n), false, 2e-6, "float32 chain of ~10 ops incl. sqrt and a division", func(e *env) [][]float32 {
				p, g, m, v := e.rand(n, -1, 1), e.rand(n, -1, 1), e.rand(n, -0.1, 0.1), e.rand(n, 0, 0.01)
				e.be.AdamWStep(ops.AdamW{LR: 1e-3, Decay: 1e-5, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, RC1: 2.09, RC2: 143.4, GradScale: 0.5}, p, g, m, v)
				return e.out(p, m, v)
			}},
			confCase{fmt.Sprintf("EMA/%d", n), false, 1e-6, "three float32 roundings; FMA contraction on the GPU", func(e *env) [][]float32 {
				ema, p := e.rand(n, -1, 1), e.rand(n, -1, 1)
				e.be.EMA(0.999, ema, p)
				return e.out(ema)
			}},
			confCase{fmt.Sprintf("Normal/%d", n), true, 0, "counter-based RNG: bit-exact by design", func(e *env) [][]float32 {
				y := e.be.Alloc(n)
				e.be.Normal(42, rng.StreamNoise, 1<<33+3, y)
				return e.out(y)
			}},
		)
	}
	for _, sh := range [][2]int{{1, 1}, {3, 257}, {8, 3072}} {
		n, d := sh[0], sh[1]
		for _, clip := range []bool{false, true} {
			cs = append(cs, confCase{fmt.Sprintf("Posterior/clip=%v/%dx%d", clip, n, d), false, 1e-5,
				"float32 kernel against the twin's float64 arithmetic", func(e *env) [][]float32 {
					sch := e.schedule(1000, clip)
					t, xt, eh, z, out := e.timesteps(n, 1000), e.rand(n*d, -3, 3), e.rand(n*d, -3, 3), e.rand(n*d, -3, 3), e.be.Alloc(n*d)
					e.be.Posterior(sch, n, d, clip, t, xt, eh, z, out)
					return e.out(out)
				}},
				confCase{fmt.Sprintf("DDIM/clip=%v/%dx%d", clip, n, d), false, 1e-5,
					"float32 kernel against the twin's float64 arithmetic", func(e *env) [][]float32 {
						xt, eh, z, out := e.rand(n*d, -3, 3), e.rand(n*d, -3, 3), e.rand(n*d, -1, 1), e.be.Alloc(n*d)
						e.be.DDIMStep(0.3, 0.45, 0.5, clip, xt, eh, z, out)
						e.be.DDIMStep(0.95, 1, 0, clip, xt, eh, z, z) // to t = −1 (ᾱ_prev = 1), η = 0
						return e.out(out, z)
					}})
		}
		cs = append(cs, confCase{fmt.Sprintf("QSample/%dx%d", n, d), false, 1e-6,
			"two products and a sum in float32; FMA contraction on the GPU", func(e *env) [][]float32 {
				sch := e.schedule(1000, false)
				t, x0, eps, xt := e.timesteps(n, 1000), e.rand(n*d, -1, 1), e.rand(n*d, -3, 3), e.be.Alloc(n*d)
				e.be.QSample(sch, n, d, t, x0, eps, xt)
				return e.out(xt)
			}})
	}
	return cs
}

// recorder is a Driver that notes which kernels were launched (for the coverage test).
type recorder struct {
	Driver
	mu       sync.Mutex
	launched map[string]bool
}

func (r *recorder) Launch(kernel string, grid, block Dim3, smem int, args ...Arg) error {
	r.mu.Lock()
	r.launched[kernel] = true
	r.mu.Unlock()
	return r.Driver.Launch(kernel, grid, block, smem, args...)
}

// normErr is ‖got − want‖₂ / max(‖want‖₂, 1e-30), with NaN where the two disagree on NaN or infinity.
func normErr(got, want []float32) float64 {
	var num, den float64
	for i := range want {
		g, w := float64(got[i]), float64(want[i])
		if math.IsNaN(g) != math.IsNaN(w) || (math.IsInf(w, 0) || math.IsInf(g, 0)) && g != w {
			return math.NaN()
		}
		if math.IsNaN(w) || math.IsInf(w, 0) {
			continue
		}
		num += (g - w) * (g - w)
		den += w * w
	}
	return math.Sqrt(num) / math.Max(math.Sqrt(den), 1e-30)
}

var launchedKernels = &recorder{launched: map[string]bool{}}

// recordingBackend returns a backend over a guarded emulator whose launches are noted in launchedKernels.
func recordingBackend(t *testing.T) *Backend {
	emu := NewEmulator(EmuOptions{Workers: 2, Guard: true})
	t.Cleanup(func() { emu.Close() })
	launchedKernels.mu.Lock()
	launchedKernels.Driver = emu
	launchedKernels.mu.Unlock()
	be, err := NewBackend(launchedKernels)
	if err != nil {
		t.Fatal(err)
	}
	return be
}

func TestEmuConformance(t *testing.T) {
	gpu := recordingBackend(t)
	for i, c := range confCases() {
		t.Run("emu/"+c.name, func(t *testing.T) {
			ref := cpu.New64()
			want := c.run(&env{ref, rand.New(rand.NewSource(int64(i)))})
			got := c.run(&env{gpu, rand.New(rand.NewSource(int64(i)))})
			if err := gpu.Sync(); err != nil {
				t.Fatalf("emulator: %v", err)
			}
			for k := range want {
				if c.exact {
					for j := range want[k] {
						if math.Float32bits(got[k][j]) != math.Float32bits(want[k][j]) {
							t.Fatalf("output %d element %d: emulator %v, cpu twin %v (must be bit-exact: %s)", k, j, got[k][j], want[k][j], c.reason)
						}
					}
					continue
				}
				e := normErr(got[k], want[k])
				if !(e <= c.tol) {
					t.Errorf("output %d: normalized error %.3g > tolerance %.3g (%s)", k, e, c.tol, c.reason)
				} else if testing.Verbose() {
					t.Logf("output %d: normalized error %.3g, %.0f%% of the tolerance", k, e, 100*e/c.tol)
				}
			}
		})
	}
}

// TestEmuNormalMatchesRNG compares the device RNG with package rng directly (not only via the CPU twin).
func TestEmuNormalMatchesRNG(t *testing.T) {
	be := recordingBackend(t)
	for _, off := range []uint64{0, 1, 3, 1<<32 - 2, 1 << 40} {
		const n = 1031
		y, u := be.Alloc(n), be.Alloc(n)
		be.Normal(7, rng.StreamSampler, off, y)
		be.Uniform(9, rng.StreamDropout, off, u)
		gy, gu := make([]float32, n), make([]float32, n)
		be.Download(gy, y)
		be.Download(gu, u)
		if err := be.Sync(); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			if w := rng.Normal(7, rng.StreamSampler, off+uint64(i)); math.Float32bits(gy[i]) != math.Float32bits(w) {
				t.Fatalf("emulator Normal offset %d element %d: %v, rng.Normal %v", off, i, gy[i], w)
			}
			if w := rng.Uniform(9, rng.StreamDropout, off+uint64(i)); math.Float32bits(gu[i]) != math.Float32bits(w) {
				t.Fatalf("emulator Uniform offset %d element %d: %v, rng.Uniform %v", off, i, gu[i], w)
			}
		}
	}
}

// TestEmuCapabilities runs the conformance cases of the optional capabilities (ops/opstest: the step controller,
// the feed, the timesteps) on the emulator against the float64 CPU backend's host implementations.
func TestEmuCapabilities(t *testing.T) {
	gpu := recordingBackend(t)
	n := 0
	for _, c := range opstest.Cases() {
		for _, m := range c.Methods {
			if strings.Contains(m, ".") || m == "Timesteps" {
				t.Run(c.Name, func(t *testing.T) { opstest.RunCase(t, c, gpu, cpu.New64()) })
				n++
				break
			}
		}
	}
	if n < 3 {
		t.Fatalf("only %d capability cases", n)
	}
}

// TestEmuKernelCoverage runs the kernel tests of this file on the emulator and fails when a kernel of kernels/*.cu
// was launched by none of them (the emulator's self-test kernels, emu_test_*, are covered by emu_test.go).
func TestEmuKernelCoverage(t *testing.T) {
	launchedKernels.mu.Lock()
	launchedKernels.launched = map[string]bool{}
	launchedKernels.mu.Unlock()
	for name, f := range map[string]func(*testing.T){"Conformance": TestEmuConformance,
		"NormalMatchesRNG": TestEmuNormalMatchesRNG,
		"GatherEpoch":      TestEmuGatherEpoch, "Timesteps": TestEmuTimesteps, "Capabilities": TestEmuCapabilities} {
		t.Run(name, f)
	}
	var missing []string
	for _, k := range EmuKernels() {
		if !strings.HasPrefix(k, "emu_test_") && !launchedKernels.launched[k] && !restKernel(k) { // restKernel: conv2d_emu_test.go
			missing = append(missing, k)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Fatalf("kernels with no conformance case: %v", missing)
	}
}
