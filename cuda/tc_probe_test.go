package cuda

import (
	"fmt"
	"math"
	"math/rand"
	"testing"
)

// Tests of the instructions under the tensor-core convolutions (kernels/tc_probe.cu), against plain definitions: on
// the emulator in the default build, on the GPU with -tags cuda (where they check that the emulator's reading of the
// PTX ISA is the hardware's). The expected values come from the PTX ISA's definitions, computed here.

// tf32RNA is cvt.rna.tf32.f32: x rounded to a 10-bit mantissa, to nearest with ties away from zero (NaN and
// infinity unchanged).
func tf32RNA(x float32) float32 {
	u := math.Float32bits(x)
	if u&0x7f800000 != 0x7f800000 {
		u = (u + 0x1000) & 0xffffe000
	}
	return math.Float32frombits(u)
}

func probeDriver(t *testing.T) Driver {
	t.Helper()
	be := testBackend(t)
	if !be.Driver().TensorCores() {
		t.Skipf("%s has no TF32 tensor cores (compute capability < 8.0)", be.Name())
	}
	return be.Driver()
}

func probeUpload(t *testing.T, d Driver, v []float32) DevicePtr {
	t.Helper()
	p, err := AllocFrom(d, v)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Free(p) })
	return p
}

func probeDownload(t *testing.T, d Driver, p DevicePtr, n int) []float32 {
	t.Helper()
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	out := make([]float32, n)
	if err := Download(d, out, p); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestTCProbeMMA: mma.sync m16n8k8 TF32 on six warps (three blocks of two), each D = C + tf32(A)·tf32(B) against the
// plain matrix product: exactly for small integers (every sum exact in FP32, whatever the order of additions), and
// within the FP32 rounding of nine additions for random reals (rounded to TF32 on the way in).
func TestTCProbeMMA(t *testing.T) {
	d := probeDriver(t)
	rnd := rand.New(rand.NewSource(5))
	for _, integers := range []bool{true, false} {
		A, B, C, got := runProbeMMA(t, d, "tc_probe_mma", rnd, 8, integers)
		for w := 0; w < probeWarps; w++ {
			checkProduct(t, fmt.Sprintf("m16n8k8 warp %d", w), integers, 16, 8, A[w*128:], C[w*128:], got[w*128:],
				func(k, n int) float32 { return B[w*64+k*8+n] })
		}
	}
}

// probeWarps is the number of warps of the mma probes: three blocks of two.
const probeWarps = 6

// runProbeMMA launches the m16n8kK probe kernel name (K = kk) on probeWarps warps, each with its own A [16×K],
// B [K×8] and C [16×8] drawn by probeData in that order, and returns them with each warp's D [16×8].
func runProbeMMA(t *testing.T, d Driver, name string, rnd *rand.Rand, kk int, integers bool) (A, B, C, got []float32) {
	t.Helper()
	A, B, C = probeData(rnd, probeWarps*16*kk, integers), probeData(rnd, probeWarps*kk*8, integers), probeData(rnd, probeWarps*128, integers)
	out := probeUpload(t, d, make([]float32, probeWarps*128))
	if err := d.Launch(name, Dim3{X: probeWarps / 2}, Dim3{X: 64}, 0, Ptr(probeUpload(t, d, A)),
		Ptr(probeUpload(t, d, B)), Ptr(probeUpload(t, d, C)), Ptr(out)); err != nil {
		t.Fatal(err)
	}
	return A, B, C, probeDownload(t, d, out, probeWarps*128)
}

// TestTCProbeCpAsync: 16-byte cp.async with and without zero fill, three commit groups retired one wait_group at a
// time, then the whole block's copies read across threads after a barrier (kernels/tc_probe.cu tc_probe_cp_async).
func TestTCProbeCpAsync(t *testing.T) {
	d := probeDriver(t)
	const n = 64
	src := make([]float32, 3*4*n)
	for i := range src {
		src[i] = float32(i + 1)
	}
	out := probeUpload(t, d, make([]float32, 2*3*4*n))
	if err := d.Launch("tc_probe_cp_async", Dim3{X: 1}, Dim3{X: n}, 3*n*16, Ptr(probeUpload(t, d, src)), Ptr(out)); err != nil {
		t.Fatal(err)
	}
	got := probeDownload(t, d, out, 2*3*4*n)
	chunk := func(g, th, i int) float32 { // what shared chunk n·g + th holds after its copy
		if (th+g)%3 == 0 {
			return 0
		}
		return src[4*(n*g+th)+i]
	}
	for th := 0; th < n; th++ {
		for g := 0; g < 3; g++ {
			for i := 0; i < 4; i++ {
				if v, want := got[g*4*n+4*th+i], chunk(g, th, i); v != want {
					t.Fatalf("thread %d, own chunk of group %d element %d after wait_group %d: %v, want %v", th, g, i, 2-g, v, want)
				}
				if v, want := got[(3+g)*4*n+4*th+i], chunk(g, (th+1)%n, i); v != want {
					t.Fatalf("thread %d, chunk of thread %d in group %d element %d after the barrier: %v, want %v", th,
						(th+1)%n, g, i, v, want)
				}
			}
		}
	}
}

// checkProduct compares got (rows x 8, row-major) with C + tf32(A)·tf32(B) for A rows x kk (row-major) and B given by
// b(k, n): exactly for integers, else within the FP32 rounding of the additions.
func checkProduct(t *testing.T, what string, integers bool, rows, kk int, A, C, got []float32, b func(k, n int) float32) {
	t.Helper()
	for r := 0; r < rows; r++ {
		for n := 0; n < 8; n++ {
			want, mag := float64(C[r*8+n]), math.Abs(float64(C[r*8+n]))
			for k := 0; k < kk; k++ {
				p := float64(tf32RNA(A[r*kk+k])) * float64(tf32RNA(b(k, n)))
				want += p
				mag += math.Abs(p)
			}
			g := float64(got[r*8+n])
			if tol := float64(kk+1) * 0x1p-24 * mag; (integers && g != want) || math.Abs(g-want) > tol {
				t.Fatalf("%s (integers=%v) D[%d][%d] = %v, want %v (C + A·B with A and B rounded to TF32)", what, integers,
					r, n, g, want)
			}
		}
	}
}

func probeData(rnd *rand.Rand, n int, integers bool) []float32 {
	v := make([]float32, n)
	for i := range v {
		if integers {
			v[i] = float32(rnd.Intn(17) - 8)
		} else {
			v[i] = float32(rnd.NormFloat64())
		}
	}
	return v
}

// TestTCProbeMMAK4: mma.sync m16n8k4 TF32 on six warps against the plain product, as TestTCProbeMMA.
func TestTCProbeMMAK4(t *testing.T) {
	d := probeDriver(t)
	rnd := rand.New(rand.NewSource(6))
	for _, integers := range []bool{true, false} {
		A, B, C, got := runProbeMMA(t, d, "tc_probe_mma_k4", rnd, 4, integers)
		for w := 0; w < probeWarps; w++ {
			checkProduct(t, fmt.Sprintf("m16n8k4 warp %d", w), integers, 16, 4, A[w*64:], C[w*128:], got[w*128:],
				func(k, n int) float32 { return B[w*32+k*8+n] })
		}
	}
}

// TestTCProbeLdmatrix: ldmatrix.x4 on 32-bit data, each lane's register i = element (lane / 4, lane % 4) of matrix i,
// from rows whose addresses the lanes gave in a scrambled order; then the convolutions' K-major fragment recipe
// (ldmatrix into mma m16n8k8) against the plain product.
func TestTCProbeLdmatrix(t *testing.T) {
	d := probeDriver(t)
	mat := make([]float32, 128)
	for i := range mat {
		mat[i] = float32(i + 1)
	}
	out := probeUpload(t, d, make([]float32, 128))
	if err := d.Launch("tc_probe_ldmatrix", Dim3{X: 1}, Dim3{X: 32}, 32*16, Ptr(probeUpload(t, d, mat)), Ptr(out)); err != nil {
		t.Fatal(err)
	}
	got := probeDownload(t, d, out, 128)
	for lane := 0; lane < 32; lane++ {
		for i := 0; i < 4; i++ {
			if want := mat[32*i+4*(lane/4)+lane%4]; got[4*lane+i] != want {
				t.Fatalf("lane %d register %d = %v, want matrix %d element (%d, %d) = %v", lane, i, got[4*lane+i], i,
					lane/4, lane%4, want)
			}
		}
	}
	rnd := rand.New(rand.NewSource(7))
	for _, integers := range []bool{true, false} {
		A, Bt, C := probeData(rnd, 128, integers), probeData(rnd, 64, integers), probeData(rnd, 128, integers)
		out := probeUpload(t, d, make([]float32, 128))
		if err := d.Launch("tc_probe_ldmatrix_mma", Dim3{X: 1}, Dim3{X: 32}, (16+8)*8*4, Ptr(probeUpload(t, d, A)),
			Ptr(probeUpload(t, d, Bt)), Ptr(probeUpload(t, d, C)), Ptr(out)); err != nil {
			t.Fatal(err)
		}
		checkProduct(t, "ldmatrix + m16n8k8", integers, 16, 8, A, C, probeDownload(t, d, out, 128),
			func(k, n int) float32 { return Bt[n*8+k] })
	}
}

// bf16RNE is cvt.rn.bf16.f32 as FP32 bits: x rounded to an 8-bit significand, to nearest with ties to even; NaN
// becomes the canonical 0x7fff0000, and finite values past the largest bfloat16 round to infinity.
func bf16RNE(x float32) uint32 {
	u := math.Float32bits(x)
	if u&0x7fffffff > 0x7f800000 {
		return 0x7fff0000
	}
	return (u + 0x7fff + (u>>16)&1) &^ 0xffff
}

// TestTCProbeCvtBF16: cvt.rn.bf16x2.f32 (and the packing kernels' f32_to_bf16) against the definition, bit for bit:
// ties to even in both directions, the carry into the exponent, overflow to infinity, subnormals, NaN, ±0.
func TestTCProbeCvtBF16(t *testing.T) {
	d := probeDriver(t)
	p := func(e int) float32 { return float32(math.Ldexp(1, e)) }
	in := []float32{
		1, 1 + p(-8), 1 + p(-8) + p(-20), 1 + 3*p(-8), 1 + p(-9), // exact, tie to even (down), above the tie, tie (up)
		-(1 + 3*p(-8)), 2 - p(-9), 2 - p(-8), // negative tie up in magnitude; rounds to 2; exact
		math.MaxFloat32, float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()),
		p(-140) * 3, p(-133) + p(-141), 0, float32(math.Copysign(0, -1)), p(-149), -7.3e-3, 3.14159265, 65504,
	}
	rnd := rand.New(rand.NewSource(11))
	for len(in) < 2*96 {
		in = append(in, float32(rnd.NormFloat64()*math.Pow(2, float64(rnd.Intn(40)-20))))
	}
	n := len(in) / 2
	out := probeUpload(t, d, make([]float32, 2*n))
	if err := d.Launch("tc_probe_cvt_bf16", Dim3{X: 2}, Dim3{X: 64}, 0, Ptr(probeUpload(t, d, in)), Ptr(out),
		I32(int32(n))); err != nil {
		t.Fatal(err)
	}
	got := probeDownload(t, d, out, 2*n)
	for i := 0; i < n; i++ {
		want := bf16RNE(in[2*i+1]) | bf16RNE(in[2*i])>>16
		if g := math.Float32bits(got[2*i]); g != want {
			t.Errorf("cvt.rn.bf16x2.f32(hi %g, lo %g) = %#08x, want %#08x", in[2*i], in[2*i+1], g, want)
		}
		if g := math.Float32bits(got[2*i+1]); g != bf16RNE(in[2*i]) {
			t.Errorf("f32_to_bf16(%g) = %#08x, want %#08x", in[2*i], g, bf16RNE(in[2*i]))
		}
	}
}

// TestTCProbeMMABF16: mma.sync m16n8k16 bf16 on six warps, D = C + bf16(A)·bf16(B) against the plain matrix
// product: exactly for small integers (every sum exact in FP32), and within the FP32 rounding of 17 additions for
// random reals. On the emulator also bit for bit against its documented order (C, then the products in k order, FP32
// rounding after each addition; kernels/emu/mma.h), which the hardware need not follow.
func TestTCProbeMMABF16(t *testing.T) {
	d := probeDriver(t)
	rnd := rand.New(rand.NewSource(7))
	for _, integers := range []bool{true, false} {
		A, B, C, got := runProbeMMA(t, d, "tc_probe_mma_bf16", rnd, 16, integers)
		bf := func(x float32) float32 { return math.Float32frombits(bf16RNE(x)) }
		for w := 0; w < probeWarps; w++ {
			for r := 0; r < 16; r++ {
				for n := 0; n < 8; n++ {
					c := C[w*128+r*8+n]
					want, mag, seq := float64(c), math.Abs(float64(c)), c
					for k := 0; k < 16; k++ {
						a, b := bf(A[w*256+r*16+k]), bf(B[w*128+k*8+n])
						want += float64(a) * float64(b)
						mag += math.Abs(float64(a) * float64(b))
						seq += a * b // exact product, one FP32 rounding per addition
					}
					g := got[w*128+r*8+n]
					if tol := 17 * 0x1p-24 * mag; (integers && float64(g) != want) || math.Abs(float64(g)-want) > tol {
						t.Fatalf("integers=%v warp %d D[%d][%d] = %v, want %v (C + A·B with A and B rounded to bfloat16)",
							integers, w, r, n, g, want)
					}
					if emulated && math.Float32bits(g) != math.Float32bits(seq) {
						t.Fatalf("emulator: warp %d D[%d][%d] = %v, want %v (C + products in k order, FP32 rounding)",
							w, r, n, g, seq)
					}
				}
			}
		}
	}
}

// TestTCProbeLdmatrixB16: ldmatrix.x4 and ldmatrix.x4.trans on 16-bit elements (the BF16 convolutions' fragment
// loads), each lane's registers against the PTX ISA's definition: without .trans, register i of lane l holds
// elements (l/4, 2(l%4)) and (l/4, 2(l%4)+1) of matrix i, the lower column in the low half; with .trans the
// transposed elements (2(l%4), l/4) and (2(l%4)+1, l/4). The rows come from addresses that the lanes give in a
// scrambled order.
func TestTCProbeLdmatrixB16(t *testing.T) {
	d := probeDriver(t)
	mat := make([]uint16, 256) // four 8x8 matrices: mat[64i + 8r + c]
	for i := range mat {
		mat[i] = uint16(0x3f00 + 7*i)
	}
	out, err := AllocFrom(d, make([]uint32, 256))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Free(out) })
	in, err := AllocFrom(d, mat)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Free(in) })
	if err := d.Launch("tc_probe_ldmatrix_b16", Dim3{X: 1}, Dim3{X: 32}, 32*16, Ptr(in), Ptr(out)); err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	got := make([]uint32, 256)
	if err := Download(d, got, out); err != nil {
		t.Fatal(err)
	}
	el := func(i, r, c int) uint32 { return uint32(mat[64*i+8*r+c]) }
	for lane := 0; lane < 32; lane++ {
		g, tg := lane/4, lane%4
		for i := 0; i < 4; i++ {
			if want := el(i, g, 2*tg) | el(i, g, 2*tg+1)<<16; got[8*lane+i] != want {
				t.Fatalf("ldmatrix.x4: lane %d register %d = %#08x, want %#08x", lane, i, got[8*lane+i], want)
			}
			if want := el(i, 2*tg, g) | el(i, 2*tg+1, g)<<16; got[8*lane+4+i] != want {
				t.Fatalf("ldmatrix.x4.trans: lane %d register %d = %#08x, want %#08x", lane, i, got[8*lane+4+i], want)
			}
		}
	}
}

// TestTCProbeLdmatrixMMABF16: the BF16 convolutions' two fragment recipes (K-major tiles through ldmatrix.x4,
// MN-major tiles through ldmatrix.x4.trans, both into mma m16n8k16; kernels/tc_probe.cu tc_probe_ldmatrix_mma_bf16)
// against C + bf16(A)·bf16(B): exactly for small integers, within the FP32 rounding of 17 additions for random reals.
func TestTCProbeLdmatrixMMABF16(t *testing.T) {
	d := probeDriver(t)
	rnd := rand.New(rand.NewSource(8))
	bf := func(x float32) float32 { return math.Float32frombits(bf16RNE(x)) }
	for mn := 0; mn < 2; mn++ {
		for _, integers := range []bool{true, false} {
			A, B, C := probeData(rnd, 256, integers), probeData(rnd, 128, integers), probeData(rnd, 128, integers)
			out := probeUpload(t, d, make([]float32, 128))
			if err := d.Launch("tc_probe_ldmatrix_mma_bf16", Dim3{X: 1}, Dim3{X: 32}, (256+128)*2,
				Ptr(probeUpload(t, d, A)), Ptr(probeUpload(t, d, B)), Ptr(probeUpload(t, d, C)), Ptr(out),
				I32(int32(mn))); err != nil {
				t.Fatal(err)
			}
			got := probeDownload(t, d, out, 128)
			for r := 0; r < 16; r++ {
				for n := 0; n < 8; n++ {
					want, mag := float64(C[r*8+n]), math.Abs(float64(C[r*8+n]))
					for k := 0; k < 16; k++ {
						p := float64(bf(A[r*16+k])) * float64(bf(B[k*8+n]))
						want += p
						mag += math.Abs(p)
					}
					g := float64(got[r*8+n])
					if tol := 17 * 0x1p-24 * mag; (integers && g != want) || math.Abs(g-want) > tol {
						t.Fatalf("mn=%d integers=%v D[%d][%d] = %v, want %v (C + A·B with A and B rounded to bfloat16)",
							mn, integers, r, n, g, want)
					}
				}
			}
		}
	}
}
