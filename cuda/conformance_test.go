package cuda

import (
	"fmt"
	"math"
	"math/rand"
	"strings"
	"testing"

	"github.com/ddpmgo/ddpm/cpu"
	"github.com/ddpmgo/ddpm/data"
	"github.com/ddpmgo/ddpm/ops"
	"github.com/ddpmgo/ddpm/ops/opstest"
	"github.com/ddpmgo/ddpm/rng"
)

// The conformance suite of the backend, the same in both builds. testBackend is the backend under test: in the
// default build a guarded emulator (kernels_emu_test.go: the kernel sources of kernels/*.cu compiled for the CPU,
// every allocation wrapped in guard bands checked after each launch), with -tags cuda GPU 0 (device_cuda_test.go).
//   - TestConformance: every case of ops/opstest (every ops.Backend method, forward and backward, guard bands,
//     in-place and accumulation checks; see the tolerance and its reason beside each case) against the float64 CPU
//     backend;
//   - TestConvTF32Conformance, TestConvBF16Conformance: the convolution cases again on the TF32 and BF16
//     tensor-core kernels (tolerances: tolTF32, the bf16 bands of ops/opstest/bf16.go);
//   - TestConvBF16MatchesCPUBF16: the BF16 kernels against the CPU backend at bf16, tightly;
//   - the kernels that must match their Go definitions bit for bit: the RNG draws, the timesteps and the batch
//     gather of the device-resident data feed.
// Kernels outside ops.Backend (fused or training-step kernels) are tested on the emulator in kernels_emu_test.go,
// resident_emu_test.go and window_emu_test.go.

func TestConformance(t *testing.T) {
	opstest.Run(t, testBackend(t), cpu.New64())
}

// tolTF32 bounds the normalized error of a TF32 convolution against the float64 reference. Rounding each input to
// 10 mantissa bits (round to nearest) makes each product's relative error at most 2^-10 and about 2^-11·√(2/3)
// ≈ 4e-4 in RMS, independent from product to product, so the normalized error of a sum of many products is about
// 4e-4 too (plus the FP32 accumulation, ~1e-6); 2e-3 leaves a factor of 5 for the few-term sums of small shapes.
const (
	tolTF32 = 2e-3
	whyTF32 = "TF32 inputs (10-bit mantissa, relative error ≤ 2^-11 each, ~4e-4 RMS per product) with FP32 accumulation"
)

// TestConvTF32Conformance: every convolution case again, on the tensor-core kernels where the device has them (the
// emulator always does).
func TestConvTF32Conformance(t *testing.T) {
	be := testBackend(t)
	if !convAtPrecision(t, be, ops.TF32) {
		return
	}
	opstest.Run(t, be, cpu.New64(), opstest.Only(convKeep(t)), opstest.MinTol(tolTF32, whyTF32))
}

// TestConvBF16Conformance: every convolution case again on the BF16 tensor-core kernels (mma m16n8k16, inputs
// rounded to bfloat16 to nearest even, FP32 accumulation), each within the band of opstest.AtPrecision(ops.BF16) (ops/opstest/bf16.go).
func TestConvBF16Conformance(t *testing.T) {
	be := testBackend(t)
	if !convAtPrecision(t, be, ops.BF16) {
		return
	}
	opstest.Run(t, be, cpu.New64(), opstest.Only(convKeep(t)), opstest.AtPrecision(ops.BF16, true))
}

// TestConvBF16MatchesCPUBF16: the BF16 convolutions against the CPU's bf16 (its float64 backend at precision bf16,
// the definition that the float32 one's oneDNN primitives are tested against in package cpu): both round the same
// operands to bfloat16 to nearest even and multiply exactly, so only the order of the sums differs and the FP32
// tolerances of the cases apply -- except to the weight gradient of the shapes where the CPU keeps it FP32
// (cpu.BF16WeightGrad false: strided, few output channels, 512 input channels), which takes the band.
func TestConvBF16MatchesCPUBF16(t *testing.T) {
	be := testBackend(t)
	if !convAtPrecision(t, be, ops.BF16) {
		return
	}
	ref := cpu.New64()
	if err := ref.SetPrecision(ops.BF16); err != nil {
		t.Fatalf("the float64 CPU backend at bf16: %v", err)
	}
	tight, loose := 0, 0
	band := opstest.AtPrecision(ops.BF16, true)
	opstest.Run(t, be, ref, opstest.Only(convKeep(t)), opstest.PerOutput(func(c opstest.Case, out string) (float64, string, bool) {
		if c.Conv == nil {
			t.Errorf("%s: a convolution case without its shape", c.Name)
			return 0, "", false
		}
		if (out == "dw" || out == "dw only") && !cpu.BF16WeightGrad(*c.Conv) {
			loose++
			band(&c)
			return c.Tol, "the CPU's FP32 weight gradient of this shape (cpu.BF16WeightGrad) against bf16 inputs: " + c.Why, true
		}
		tight++
		return 0, "", false
	}))
	t.Logf("%d outputs held to the FP32 tolerances, %d (FP32 weight gradients on the CPU) to the bf16 band", tight, loose)
	if tight == 0 || loose == 0 {
		t.Errorf("%d tight and %d banded outputs: the cases no longer cover both kinds", tight, loose)
	}
}

// convAtPrecision selects precision p on be; on a device without tensor cores it checks that the request is refused
// with an error and leaves FP32 selected, and returns false.
func convAtPrecision(t *testing.T, be *Backend, p ops.Precision) bool {
	t.Helper()
	if err := be.SetPrecision(p); err != nil {
		t.Logf("%s: %v: checking that FP32 stays selected", be.Name(), err)
		if be.Driver().TensorCores() {
			t.Fatalf("SetPrecision(%s) refused on a device with tensor cores: %v", p, err)
		}
		if be.Precision() != ops.FP32 || be.TensorCores() {
			t.Fatalf("precision %s after a refused SetPrecision(%s)", be.Precision(), p)
		}
		return false
	}
	if be.Precision() != p {
		t.Fatalf("Precision() = %s after SetPrecision(%s)", be.Precision(), p)
	}
	return true
}

// convKeep keeps the convolution cases (less one large shape on the emulator).
func convKeep(t *testing.T) func(opstest.Case) bool {
	conv := opstest.Uses("Conv2D", "Conv2DBackward")
	keep := func(c opstest.Case) bool {
		// 8 s on the emulator, whose tensor-core MMA runs on every lane; its FP32 run covers the shape.
		return conv(c) && !(emulated && strings.HasPrefix(c.Name, "Conv2D/9x32x16x16"))
	}
	if n := len(opstest.Select(opstest.Only(keep))); n < 5 {
		t.Fatalf("only %d convolution cases", n)
	}
	return keep
}

// bitExact runs draw on a fresh buffer of n elements and compares it with want(i), bit for bit.
func bitExact(t *testing.T, be *Backend, what string, n int, draw func(y ops.Buf), want func(i int) float32) {
	t.Helper()
	y := be.Alloc(n)
	defer be.Free(y)
	draw(y)
	got := make([]float32, n)
	be.Download(got, y)
	if err := be.Sync(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	for i, g := range got {
		if w := want(i); math.Float32bits(g) != math.Float32bits(w) {
			t.Fatalf("%s element %d: device %v, Go definition %v", what, i, g, w)
		}
	}
}

// TestNormalMatchesRNG compares the device RNG with package rng directly (not only via the CPU twin), at offsets
// across a Philox block boundary and beyond 2^32.
func TestNormalMatchesRNG(t *testing.T) {
	be := testBackend(t)
	for _, c := range []struct {
		seed   uint64
		stream uint32
		off    uint64
		n      int
	}{
		{7, rng.StreamSampler, 0, 1031}, {7, rng.StreamSampler, 1, 1031}, {7, rng.StreamSampler, 3, 1031},
		{7, rng.StreamSampler, 1<<32 - 2, 1031}, {7, rng.StreamSampler, 1 << 40, 1031},
		{7, rng.StreamNoise, 1<<33 + 1, 4099},
	} {
		bitExact(t, be, fmt.Sprintf("Normal(%d, %d, %d)", c.seed, c.stream, c.off), c.n,
			func(y ops.Buf) { be.Normal(c.seed, c.stream, c.off, y) },
			func(i int) float32 { return rng.Normal(c.seed, c.stream, c.off+uint64(i)) })
		bitExact(t, be, fmt.Sprintf("Uniform(%d, %d, %d)", c.seed+2, rng.StreamDropout, c.off), c.n,
			func(y ops.Buf) { be.Uniform(c.seed+2, rng.StreamDropout, c.off, y) },
			func(i int) float32 { return rng.Uniform(c.seed+2, rng.StreamDropout, c.off+uint64(i)) })
	}
}

// TestTimestepsMatchRNG: the device draws are rng.Intn's, exactly, at offsets across a Philox block boundary and
// beyond 2^32.
func TestTimestepsMatchRNG(t *testing.T) {
	be := testBackend(t)
	draws := func(seed, off uint64, T, n int) {
		bitExact(t, be, fmt.Sprintf("Timesteps(%d, offset %d, T %d)", seed, off, T), n,
			func(y ops.Buf) { be.Timesteps(seed, rng.StreamTimestep, off, T, y) },
			func(i int) float32 { return float32(rng.Intn(seed, rng.StreamTimestep, off+uint64(i), T)) })
	}
	for _, off := range []uint64{0, 3, 1<<32 - 1, 1 << 40} {
		for _, T := range []int{1, 100, 1000} {
			draws(13, off, T, 37)
		}
	}
	draws(7, 5, 1000, 4099)
}

// TestGatherEpochMatchesData: the device batch of an epoch (ops.Feed) equals data.Gather of the same images and flips, with
// the order from data.EpochOrder and the flips from data.FlipAt (both bit for bit: the same bytes scaled by one
// float expression).
func TestGatherEpochMatchesData(t *testing.T) {
	be := testBackend(t)
	flips := 0
	for _, c := range []struct {
		N, C, H, W, B int
		seed          uint64
		epochs, k0s   []int
	}{
		{23, 2, 4, 5, 7, 11, []int{0, 3}, []int{0, 7, 23 - 7}},
		{50, 3, 8, 8, 16, 3, []int{2}, []int{20}},
	} {
		N, C, H, W, B := c.N, c.C, c.H, c.W, c.B
		rnd := rand.New(rand.NewSource(int64(N)))
		m := &data.Images{C: C, H: H, W: W, Pix: make([]uint8, N*C*H*W)}
		rnd.Read(m.Pix)
		f, err := be.NewFeed(m.Pix, N, C, H, W)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Free()
		out := be.Alloc(B * C * H * W)
		got, want := make([]float32, B*C*H*W), make([]float32, B*C*H*W)
		for _, epoch := range c.epochs {
			perm := data.EpochOrder(c.seed, epoch, N)
			if err := f.SetOrder(perm); err != nil {
				t.Fatal(err)
			}
			for _, k0 := range c.k0s {
				for _, flip := range []bool{false, true} {
					f.Gather(epoch, k0, B, flip, c.seed, out)
					be.Download(got, out)
					if err := be.Sync(); err != nil {
						t.Fatal(err)
					}
					idx, fl := perm[k0:k0+B], make([]bool, B)
					for s := range fl {
						fl[s] = flip && data.FlipAt(c.seed, epoch, N, k0+s)
						if fl[s] {
							flips++
						}
					}
					data.Gather(want, m, idx, fl)
					for i := range want {
						if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
							s := i / (C * H * W)
							t.Fatalf("%dx%dx%dx%d epoch %d k0 %d flip %v element %d (sample %d, image %d, flipped %v): device %v, data.Gather %v",
								N, C, H, W, epoch, k0, flip, i, s, idx[s], fl[s], got[i], want[i])
						}
					}
				}
			}
		}
	}
	if flips == 0 {
		t.Fatal("no sample was flipped: the flip path went untested")
	}
}
