//go:build cuda

package cuda

import (
	"math"
	"math/rand"
	"slices"
	"testing"

	"github.com/ddpmgo/ddpm/cpu"
	"github.com/ddpmgo/ddpm/data"
	"github.com/ddpmgo/ddpm/ops/opstest"
	"github.com/ddpmgo/ddpm/rng"
)

// The conformance suite on the GPU itself (go test -tags cuda ./cuda on an NVIDIA host): every ops.Backend method
// through ops/opstest against the float64 CPU backend, the TF32 convolutions where the device has tensor cores,
// and the bit-exact kernels (RNG, timesteps, the resident batch gather) against their Go definitions.

func deviceBackend(t *testing.T) *Backend {
	t.Helper()
	d, err := Open("cuda")
	if err != nil {
		t.Fatal(err)
	}
	be, err := NewBackend(d)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		be.Close()
		d.Close()
	})
	return be
}

func TestCUDAConformance(t *testing.T) {
	opstest.Run(t, deviceBackend(t), cpu.New64())
}

func TestCUDAConvTF32Conformance(t *testing.T) {
	be := deviceBackend(t)
	if !be.SetTensorCores(true) {
		t.Logf("%s has no TF32 tensor cores (compute capability < 8.0): checking that the FP32 kernels stay selected", be.Name())
		if be.TensorCores() {
			t.Fatal("TensorCores() is true after a refused SetTensorCores(true)")
		}
		return
	}
	ref := cpu.New64()
	n := 0
	for _, c := range opstest.Cases() {
		if slices.Contains(c.Methods, "Conv2D") || slices.Contains(c.Methods, "Conv2DBackward") {
			c.Tol = max(c.Tol, 2e-3) // TF32: see tolTF32 in conv2d_emu_test.go
			t.Run(c.Name, func(t *testing.T) { opstest.RunCase(t, c, be, ref) })
			n++
		}
	}
	if n == 0 {
		t.Fatal("no convolution cases")
	}
}

func TestCUDABitExactKernels(t *testing.T) {
	be := deviceBackend(t)
	const n = 4099
	y, tb := be.Alloc(n), be.Alloc(n)
	be.Normal(7, rng.StreamNoise, 1<<33+1, y)
	be.Timesteps(7, rng.StreamTimestep, 5, 1000, tb)
	gy, gt := make([]float32, n), make([]float32, n)
	be.Download(gy, y)
	be.Download(gt, tb)
	if err := be.Sync(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if w := rng.Normal(7, rng.StreamNoise, 1<<33+1+uint64(i)); math.Float32bits(gy[i]) != math.Float32bits(w) {
			t.Fatalf("Normal element %d: device %v, rng.Normal %v", i, gy[i], w)
		}
		if w := rng.Intn(7, rng.StreamTimestep, 5+uint64(i), 1000); gt[i] != float32(w) {
			t.Fatalf("Timesteps element %d: device %v, rng.Intn %d", i, gt[i], w)
		}
	}

	const N, C, H, W, B = 50, 3, 8, 8, 16
	r := rand.New(rand.NewSource(1))
	m := &data.Images{C: C, H: H, W: W, Pix: make([]uint8, N*C*H*W)}
	r.Read(m.Pix)
	ds, err := be.UploadDataset(m.Pix, N, C, H, W)
	if err != nil {
		t.Fatal(err)
	}
	order, err := be.AllocInt32s(N)
	if err != nil {
		t.Fatal(err)
	}
	perm := data.EpochOrder(3, 2, N)
	if err := be.UploadInt32s(order, perm); err != nil {
		t.Fatal(err)
	}
	out := be.Alloc(B * C * H * W)
	be.GatherEpoch(ds, order, 20, B, true, 3, rng.StreamFlip, 2*N, out)
	got, want := make([]float32, B*C*H*W), make([]float32, B*C*H*W)
	be.Download(got, out)
	if err := be.Sync(); err != nil {
		t.Fatal(err)
	}
	fl := make([]bool, B)
	for s := range fl {
		fl[s] = data.FlipAt(3, 2, N, 20+s)
	}
	data.Gather(want, m, perm[20:20+B], fl)
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("GatherEpoch element %d: device %v, data.Gather %v", i, got[i], want[i])
		}
	}
}
