//go:build !cuda

package cuda

import (
	"math"
	"math/rand"
	"testing"

	"github.com/ddpmgo/ddpm/data"
	"github.com/ddpmgo/ddpm/rng"
)

// The kernels of the device-resident training input (kernels/data.cu: gather_epoch_u8_f32 through ops.Feed,
// timesteps_f32) bit for bit against their host definitions, over more shapes and offsets than the conformance
// cases (ops/opstest: Feed, Timesteps; the step controller is compared there too).

// TestEmuGatherEpoch: the device batch of an epoch equals data.Gather of the same images and flips, with the order
// from data.EpochOrder and the flips from data.FlipAt (both bit for bit: the same bytes scaled by one float
// expression).
func TestEmuGatherEpoch(t *testing.T) {
	be := recordingBackend(t)
	const N, C, H, W, B = 23, 2, 4, 5, 7
	rnd := rand.New(rand.NewSource(5))
	m := &data.Images{C: C, H: H, W: W, Pix: make([]uint8, N*C*H*W)}
	for i := range m.Pix {
		m.Pix[i] = uint8(rnd.Intn(256))
	}
	f, err := be.NewFeed(m.Pix, N, C, H, W)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Free()
	out := be.Alloc(B * C * H * W)
	got, want := make([]float32, B*C*H*W), make([]float32, B*C*H*W)
	const seed = 11
	flips := 0
	for _, epoch := range []int{0, 3} {
		perm := data.EpochOrder(seed, epoch, N)
		if err := f.SetOrder(perm); err != nil {
			t.Fatal(err)
		}
		for _, k0 := range []int{0, 7, N - B} {
			for _, flip := range []bool{false, true} {
				f.Gather(epoch, k0, B, flip, seed, out)
				be.Download(got, out)
				if err := be.Sync(); err != nil {
					t.Fatal(err)
				}
				idx, fl := perm[k0:k0+B], make([]bool, B)
				for s := range fl {
					fl[s] = flip && data.FlipAt(seed, epoch, N, k0+s)
					if fl[s] {
						flips++
					}
				}
				data.Gather(want, m, idx, fl)
				for i := range want {
					if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
						t.Fatalf("epoch %d k0 %d flip %v element %d (sample %d, image %d, flipped %v): device %v, data.Gather %v",
							epoch, k0, flip, i, i/(C*H*W), idx[i/(C*H*W)], fl[i/(C*H*W)], got[i], want[i])
					}
				}
			}
		}
	}
	if flips == 0 {
		t.Fatal("no sample was flipped: the flip path went untested")
	}
}

// TestEmuTimesteps: the device draws are rng.Intn's, exactly, at offsets across a Philox block boundary and beyond
// 2^32.
func TestEmuTimesteps(t *testing.T) {
	be := recordingBackend(t)
	for _, off := range []uint64{0, 3, 1<<32 - 1, 1 << 40} {
		for _, T := range []int{1, 100, 1000} {
			const n = 37
			tb := be.Alloc(n)
			be.Timesteps(13, rng.StreamTimestep, off, T, tb)
			got := make([]float32, n)
			be.Download(got, tb)
			if err := be.Sync(); err != nil {
				t.Fatal(err)
			}
			for i, g := range got {
				if w := rng.Intn(13, rng.StreamTimestep, off+uint64(i), T); g != float32(w) {
					t.Fatalf("offset %d T %d element %d: device %v, rng.Intn %d", off, T, i, g, w)
				}
			}
		}
	}
}
