package cuda

import (
	"math"
	"math/rand"
	"testing"

	"github.com/ddpmgo/ddpm/cpu"
	"github.com/ddpmgo/ddpm/ops"
	"github.com/ddpmgo/ddpm/ops/opstest"
)

// Tests of gemm_bf16 (kernels/linear_bf16.cu), the GEMM of Linear and of the attention products at precision bf16:
// alone against a Go definition, and through the ops against the CPU twin. On the emulator in the default build, on
// the GPU with -tags cuda.

// gemmBF16Case is one strided batched GEMM: the shape, the layouts (which index of A and B is contiguous) and the
// epilogue, in gemmCall's terms.
type gemmBF16Case struct {
	name            string
	m, n, k         int
	aKFast, bKFast  bool // A[m, k] at m·K + k (else k·M + m); B[k, n] at n·K + k (else k·N + n)
	batch, zdiv     int  // two batch levels, as attention's (sample, head)
	alpha           float32
	bias, acc, ties bool // ties: some inputs halfway between two bfloat16 values
}

// TestGemmBF16 compares gemm_bf16 with its definition: C = alpha·Σ_k bf16(A)·bf16(B) (+ bias) (+ C), the rounding
// to nearest even of cpu.RoundBF16, the sum in float64. The products of bfloat16 values are exact, so the kernel
// differs only by its FP32 additions: at most (K + 1)·2^-24 of Σ|products| (a K-term sum, then alpha), plus an ulp of
// each epilogue addition. An input rounded the wrong way (a tie to even missed: 2^-8 of a product) is far outside.
// The shapes cross the 64×64 tiles and the 32-k steps; each matrix of A and B is followed by NaN (a read past it
// into a stored result shows); C lies in a larger buffer (rows cSM > N apart, batches apart by more than a matrix)
// whose other elements must keep their values, bit for bit, and with accumulate = 0 its own elements start as NaN
// (only written).
func TestGemmBF16(t *testing.T) {
	be := testBackend(t)
	if !be.Driver().TensorCores() {
		t.Skipf("%s has no tensor cores (compute capability < 8.0)", be.Name())
	}
	if err := be.SetPrecision(ops.BF16); err != nil {
		t.Fatal(err)
	}
	for _, c := range []gemmBF16Case{
		{name: "1x1x1", m: 1, n: 1, k: 1, aKFast: true, bKFast: true, alpha: 1, bias: true},
		{name: "linear", m: 65, n: 70, k: 17, aKFast: true, bKFast: true, alpha: 1, bias: true, ties: true},
		{name: "linear dx", m: 130, n: 33, k: 70, aKFast: true, bKFast: false, alpha: 1, acc: true, ties: true},
		{name: "linear dw", m: 129, n: 66, k: 95, aKFast: false, bKFast: false, alpha: 1, acc: true, ties: true},
		{name: "a m-fast, b k-fast", m: 40, n: 129, k: 33, aKFast: false, bKFast: true, alpha: -0.5, bias: true},
		{name: "long k", m: 3, n: 5, k: 1000, aKFast: true, bKFast: true, alpha: 1},
		// k-steps of 32: one full, three full (the main loop, then the last step), one full and one partial.
		{name: "k 32", m: 64, n: 64, k: 32, aKFast: false, bKFast: true, alpha: 1, ties: true},
		{name: "k 96", m: 20, n: 64, k: 96, aKFast: true, bKFast: false, alpha: 1, acc: true},
		{name: "k 33", m: 65, n: 3, k: 33, aKFast: false, bKFast: false, alpha: 1, bias: true},
		{name: "attention S", m: 70, n: 70, k: 5, aKFast: true, bKFast: true, batch: 6, zdiv: 3, alpha: 0.4472136},
		{name: "attention dv", m: 70, n: 5, k: 70, aKFast: false, bKFast: false, batch: 6, zdiv: 3, alpha: 1, acc: true},
		{name: "batch, one level", m: 17, n: 9, k: 64, aKFast: true, bKFast: false, batch: 3, zdiv: 1, alpha: 2, bias: true, acc: true},
	} {
		t.Run(c.name, func(t *testing.T) { checkGemmBF16(t, be, c, rand.New(rand.NewSource(int64(len(c.name))))) })
	}
}

func checkGemmBF16(t *testing.T, be *Backend, c gemmBF16Case, rnd *rand.Rand) {
	d := be.Driver()
	batch, zdiv := max(c.batch, 1), max(c.zdiv, 1)
	z1s := ceilDiv(batch, zdiv)
	// Operand layouts: matrix (z1, z2) of A at z1·aS1 + z2·aS2, with a gap of 7 NaN after each.
	msz := func(r, cc int) int { return r*cc + 7 }
	aS2, bS2 := msz(c.m, c.k), msz(c.k, c.n)
	aS1, bS1 := zdiv*aS2, zdiv*bS2
	cSM := c.n + 3
	cS2 := c.m*cSM + 5
	cS1 := zdiv * cS2
	draw := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			v[i] = float32(rnd.NormFloat64())
			if c.ties && i%5 == 0 { // halfway between two bfloat16 values (the low 16 bits 0x8000): tie to even
				v[i] = math.Float32frombits(math.Float32bits(v[i])&^0xffff | 0x8000)
			}
		}
		return v
	}
	A, B := draw(z1s*aS1), draw(z1s*bS1)
	for i := range A { // the gaps between matrices are NaN: a stray read shows in C
		if i%aS2 >= c.m*c.k {
			A[i] = float32(math.NaN())
		}
	}
	for i := range B {
		if i%bS2 >= c.k*c.n {
			B[i] = float32(math.NaN())
		}
	}
	C0 := draw(z1s * cS1)
	var bias []float32
	if c.bias {
		bias = draw(c.n)
	}
	g := gemmCall{M: c.m, N: c.n, K: c.k, batch: batch, zdiv: zdiv, aS1: aS1, aS2: aS2, bS1: bS1, bS2: bS2,
		cSM: cSM, cS1: cS1, cS2: cS2, alpha: c.alpha, acc: c.acc}
	g.aSM, g.aSK = 1, c.m
	if c.aKFast {
		g.aSM, g.aSK = c.k, 1
	}
	g.bSK, g.bSN = c.n, 1
	if c.bKFast {
		g.bSK, g.bSN = 1, c.k
	}
	cOff := func(z, m, n int) int { return z/zdiv*cS1 + z%zdiv*cS2 + m*cSM + n }
	inC := make([]bool, len(C0))
	for z := range batch {
		for m := range c.m {
			for n := range c.n {
				inC[cOff(z, m, n)] = true
				if !c.acc {
					C0[cOff(z, m, n)] = float32(math.NaN())
				}
			}
		}
	}
	g.a, g.b, g.c = probeUpload(t, d, A), probeUpload(t, d, B), probeUpload(t, d, C0)
	if c.bias {
		g.bias = probeUpload(t, d, bias)
	}
	be.gemm("TestGemmBF16", g)
	got := probeDownload(t, d, g.c, len(C0))

	bad := 0
	for i, v := range got {
		if !inC[i] && math.Float32bits(v) != math.Float32bits(C0[i]) {
			t.Fatalf("element %d outside C changed: %v, was %v", i, v, C0[i])
		}
	}
	for z := range batch {
		ao, bo := z/zdiv*aS1+z%zdiv*aS2, z/zdiv*bS1+z%zdiv*bS2
		for m := range c.m {
			for n := range c.n {
				var s, abs float64
				for k := range c.k {
					p := float64(cpu.RoundBF16(A[ao+m*g.aSM+k*g.aSK])) * float64(cpu.RoundBF16(B[bo+k*g.bSK+n*g.bSN]))
					s += p
					abs += math.Abs(p)
				}
				want := s * float64(c.alpha)
				tol := float64(c.k+1) * 0x1p-24 * abs * math.Abs(float64(c.alpha))
				if c.bias {
					want += float64(bias[n])
				}
				i := cOff(z, m, n)
				if c.acc {
					want += float64(C0[i])
				}
				tol += 0x1p-23 * (math.Abs(s*float64(c.alpha)) + math.Abs(want) + 1e-30)
				if c.bias {
					tol += 0x1p-23 * math.Abs(float64(bias[n]))
				}
				if diff := math.Abs(float64(got[i]) - want); !(diff <= tol) {
					if bad++; bad <= 5 {
						t.Errorf("z %d C[%d, %d] = %v, want %v (difference %.3g > %.3g)", z, m, n, got[i], want, diff, tol)
					}
				}
			}
		}
	}
	if bad > 0 {
		t.Fatalf("%d of %d elements outside the bound", bad, batch*c.m*c.n)
	}
}

// TestLinearAttentionBF16Conformance: the Linear and Attention cases of ops/opstest at precision bf16 (gemm_bf16;
// softmax in FP32) against the float64 CPU backend at fp32, each within its bf16 band (ops/opstest/bf16.go).
func TestLinearAttentionBF16Conformance(t *testing.T) {
	be := testBackend(t)
	if !convAtPrecision(t, be, ops.BF16) {
		return
	}
	opstest.Run(t, be, cpu.New64(), opstest.Only(linearAttnKeep(t)), opstest.AtPrecision(ops.BF16, true))
}

// TestLinearBF16MatchesCPUBF16: the Linear cases at bf16 against the float64 CPU backend at bf16, which rounds the
// same operands (cpu/bf16.go) and sums in float64: the products agree exactly, so the FP32 tolerance of each case
// applies (not the band), and an operand rounded differently, or not at all, shows. (Not attention: there the
// rounded P and dS are results of the backend's own FP32 sums, and a value within an FP32 rounding of a bfloat16
// tie may round either way, a 2^-8 change that the FP32 tolerance would not allow. On the emulator its errors stay
// below 3e-7, but the GPU's MMA adds in another order.)
func TestLinearBF16MatchesCPUBF16(t *testing.T) {
	be := testBackend(t)
	if !convAtPrecision(t, be, ops.BF16) {
		return
	}
	ref := cpu.New64()
	if err := ref.SetPrecision(ops.BF16); err != nil {
		t.Fatal(err)
	}
	opstest.Run(t, be, ref, opstest.Only(opstest.Uses("Linear", "LinearBackward")))
}

// linearAttnKeep keeps the cases of Linear and Attention, failing when there are too few.
func linearAttnKeep(t *testing.T) func(opstest.Case) bool {
	keep := opstest.Uses("Linear", "LinearBackward", "Attention", "AttentionBackward")
	if n := len(opstest.Select(opstest.Only(keep))); n < 10 {
		t.Fatalf("only %d linear and attention cases", n)
	}
	return keep
}

// TestBiasGradSplits pins the row splits of Linear's bias gradient (linearBiasGrad): one launch while the rows are
// few, else enough blocks for the GPU; ops/opstest's Linear/1100x3->70 takes the two-level path.
func TestBiasGradSplits(t *testing.T) {
	for _, c := range []struct{ n, out, splits, chunk int }{
		{16, 16, 1, 16}, {256, 256, 1, 256}, {511, 512, 2, 256}, {1100, 70, 5, 220}, {4096, 256, 16, 256},
		{16384, 256, 32, 512}, {16384, 64, 32, 512}, {65536, 4096, 3, 21846},
	} {
		if s, ch := biasGradSplits(c.n, c.out); s != c.splits || ch != c.chunk {
			t.Errorf("n %d, out %d: %d splits of %d rows, want %d of %d", c.n, c.out, s, ch, c.splits, c.chunk)
		}
	}
}
