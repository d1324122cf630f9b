//go:build !cuda

package cuda

import (
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"time"
)

// Tests of the CPU emulator itself (kernels/emu), through the kernels of kernels/emu/selftest.cu. Expected values
// are computed here from CUDA's documented semantics.

func newTestEmu(t testing.TB) *Emulator {
	t.Helper()
	e := NewEmulator(EmuOptions{Workers: 2, Guard: true})
	t.Cleanup(func() { e.Close() })
	return e
}

func mustAlloc[T Scalar](t testing.TB, d Driver, host []T) DevicePtr {
	t.Helper()
	p, err := AllocFrom(d, host)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustDownload[T Scalar](t testing.TB, d Driver, p DevicePtr, n int) []T {
	t.Helper()
	out := make([]T, n)
	if err := Download(d, out, p); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestEmuBarrierAndSharedMemory(t *testing.T) {
	e := newTestEmu(t)
	for _, block := range []Dim3{{1, 1, 1}, {32, 1, 1}, {100, 1, 1}, {8, 4, 2}, {5, 3, 7}, {1024, 1, 1}} {
		t.Run(fmt.Sprintf("emu/block%dx%dx%d", block.X, block.Y, block.Z), func(t *testing.T) {
			const grid = 5
			n := block.X * block.Y * block.Z
			out := mustAlloc(t, e, make([]int32, grid*n))
			counts := mustAlloc(t, e, make([]int32, 3*grid))
			if err := e.Launch("emu_test_barrier", Dim3{grid, 1, 1}, block, 0, Ptr(out), Ptr(counts)); err != nil {
				t.Fatal(err)
			}
			got := mustDownload[int32](t, e, out, grid*n)
			for b := 0; b < grid; b++ {
				for i := 0; i < n; i++ {
					if want := int32((i+1)%n + 1000*b); got[b*n+i] != want {
						t.Fatalf("block %d thread %d read %d from its neighbour's slot, want %d", b, i, got[b*n+i], want)
					}
				}
			}
			c := mustDownload[int32](t, e, counts, 3*grid)
			for b := 0; b < grid; b++ {
				want := [3]int32{int32(n / 2), 1, 1} // count(t odd), and(t < n), or(t == 0)
				if [3]int32(c[3*b:3*b+3]) != want {
					t.Errorf("block %d: __syncthreads_count/_and/_or = %v, want %v", b, c[3*b:3*b+3], want)
				}
			}
		})
	}
}

func TestEmuDynamicSharedMemory(t *testing.T) {
	e := newTestEmu(t)
	const grid, block = 64, 256
	in := make([]float32, grid*block)
	want := make([]float32, grid)
	rnd := rand.New(rand.NewSource(1))
	for i := range in {
		in[i] = float32(rnd.Intn(1000)) // integers: every partial sum is exact, so order does not matter
		want[i/block] += in[i]
	}
	din := mustAlloc(t, e, in)
	dout := mustAlloc(t, e, make([]float32, grid))
	if err := e.Launch("emu_test_dynsmem_sum", Dim3{X: grid}, Dim3{X: block}, 4*block, Ptr(din), Ptr(dout)); err != nil {
		t.Fatal(err)
	}
	got := mustDownload[float32](t, e, dout, grid)
	for b := range want {
		if got[b] != want[b] {
			t.Fatalf("emulator block %d: shared-memory sum %v, want %v", b, got[b], want[b])
		}
	}
}

// TestEmuWarpShuffles checks __shfl_sync, __shfl_up_sync, __shfl_down_sync, __shfl_xor_sync (also with width 8),
// __ballot_sync, __any_sync and __all_sync against the CUDA programming guide's definitions.
func TestEmuWarpShuffles(t *testing.T) {
	e := newTestEmu(t)
	const grid, block = 3, 64
	n := grid * block
	in := make([]int32, n)
	rnd := rand.New(rand.NewSource(2))
	for i := range in {
		in[i] = int32(rnd.Intn(200) - 50)
	}
	din := mustAlloc(t, e, in)
	dout := mustAlloc(t, e, make([]int32, 8*n))
	if err := e.Launch("emu_test_shuffle", Dim3{X: grid}, Dim3{X: block}, 0, Ptr(din), Ptr(dout)); err != nil {
		t.Fatal(err)
	}
	got := mustDownload[int32](t, e, dout, 8*n)
	for w := 0; w < n/32; w++ {
		lane := func(l int) int32 { return in[32*w+l] }
		var ballot uint32
		any, all := int32(0), int32(1)
		for l := 0; l < 32; l++ {
			if lane(l) > 0 {
				ballot |= 1 << l
			}
			if lane(l) > 100 {
				any = 1
			}
			if !(lane(l) > -1000) {
				all = 0
			}
		}
		for l := 0; l < 32; l++ {
			up, down, xor, down8 := lane(l), lane(l), lane(l^6), lane(l)
			if l >= 3 {
				up = lane(l - 3)
			}
			if l+5 < 32 {
				down = lane(l + 5)
			}
			if l%8+2 < 8 {
				down8 = lane(l + 2)
			}
			want := []int32{lane((l*7 + 3) & 31), up, down, xor, down8, int32(ballot), any, all}
			g := got[8*(32*w+l) : 8*(32*w+l)+8]
			for k := range want {
				if g[k] != want[k] {
					t.Errorf("emulator warp %d lane %d result %d (see selftest.cu): got %d, want %d", w, l, k, g[k], want[k])
				}
			}
		}
	}
}

func TestEmuWarpReduction(t *testing.T) {
	e := newTestEmu(t)
	const n = 256
	in := make([]float32, n)
	for i := range in {
		in[i] = float32(i%7) - 2
	}
	din, dout := mustAlloc(t, e, in), mustAlloc(t, e, make([]float32, n))
	if err := e.Launch("emu_test_warp_sum", Dim3{X: 2}, Dim3{X: 128}, 0, Ptr(din), Ptr(dout)); err != nil {
		t.Fatal(err)
	}
	got := mustDownload[float32](t, e, dout, n)
	for i := 0; i < n; i++ {
		var want float32
		for l := 0; l < 32; l++ {
			want += in[i/32*32+l]
		}
		if got[i] != want {
			t.Fatalf("emulator thread %d: butterfly warp sum %v, want %v", i, got[i], want)
		}
	}
}

// TestEmuAtomicsAcrossBlocks runs many blocks on two OS threads; lost updates would show as wrong totals.
func TestEmuAtomicsAcrossBlocks(t *testing.T) {
	e := newTestEmu(t)
	const n = 50000
	in := make([]float32, n)
	var fsum float32
	var imax int32 = -1 << 31
	for i := range in {
		in[i] = float32(i%97) / 4 // multiples of 1/4 with a total < 2^22: float sums are exact in any order
		fsum += in[i]
		if v := int32(in[i] * 1000); v > imax {
			imax = v
		}
	}
	din := mustAlloc(t, e, in)
	counter := mustAlloc(t, e, []int32{0})
	dsum := mustAlloc(t, e, []float32{0})
	dmax := mustAlloc(t, e, []int32{-1 << 31})
	usum := mustAlloc(t, e, []uint64{0})
	if err := e.Launch("emu_test_atomics", Dim3{X: (n + 127) / 128}, Dim3{X: 128}, 0,
		Ptr(din), Ptr(counter), Ptr(dsum), Ptr(dmax), Ptr(usum), I64(n)); err != nil {
		t.Fatal(err)
	}
	if c := mustDownload[int32](t, e, counter, 1)[0]; c != n {
		t.Errorf("emulator atomicAdd(int) counter = %d, want %d", c, n)
	}
	if s := mustDownload[float32](t, e, dsum, 1)[0]; s != fsum {
		t.Errorf("emulator atomicAdd(float) sum = %v, want %v", s, fsum)
	}
	if m := mustDownload[int32](t, e, dmax, 1)[0]; m != imax {
		t.Errorf("emulator atomicMax = %d, want %d", m, imax)
	}
	if u := mustDownload[uint64](t, e, usum, 1)[0]; u != n*(n-1)/2 {
		t.Errorf("emulator atomicAdd(ull) = %d, want %d", u, n*(n-1)/2)
	}
}

func TestEmuBarrierMisuseIsAnError(t *testing.T) {
	e := newTestEmu(t)
	out := mustAlloc(t, e, make([]float32, 64))
	cases := []struct {
		kernel string
		block  int
		args   []Arg
		want   []string
	}{
		{"emu_test_barrier_exit", 64, []Arg{Ptr(out), I32(40)}, []string{"emu_test_barrier_exit", "exited", "__syncthreads"}},
		{"emu_test_barrier_diverge", 64, []Arg{Ptr(out)}, []string{"emu_test_barrier_diverge", "different barriers"}},
		{"emu_test_deadlock", 32, []Arg{Ptr(out)}, []string{"emu_test_deadlock", "deadlock"}},
	}
	for _, c := range cases {
		t.Run("emu/"+c.kernel, func(t *testing.T) {
			done := make(chan error, 1)
			go func() { done <- e.Launch(c.kernel, Dim3{X: 2}, Dim3{X: c.block}, 0, c.args...) }()
			select {
			case err := <-done:
				if err == nil {
					t.Fatalf("%s: launch succeeded, want a barrier error", c.kernel)
				}
				for _, w := range c.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not mention %q", err, w)
					}
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("%s: launch hung", c.kernel)
			}
		})
	}
	// The emulator must be usable after an aborted block.
	t.Run("emu/recovers", func(t *testing.T) {
		if err := e.Launch("emu_test_barrier_exit", Dim3{X: 2}, Dim3{X: 64}, 0, Ptr(out), I32(64)); err != nil {
			t.Fatalf("correct launch after misuse: %v", err)
		}
		got := mustDownload[float32](t, e, out, 64)
		for i, v := range got {
			if v != float32((i+1)%64) {
				t.Fatalf("out[%d] = %v, want %d", i, v, (i+1)%64)
			}
		}
	})
}

func TestEmuLaunchChecksArguments(t *testing.T) {
	e := newTestEmu(t)
	out := mustAlloc(t, e, make([]float32, 64))
	for _, c := range []struct {
		name string
		args []Arg
		want string
	}{
		{"count", []Arg{Ptr(out)}, "takes 2 arguments"},
		{"kind", []Arg{Ptr(out), F32(40)}, "argument 1"},
		{"size", []Arg{Ptr(out), I64(40)}, "argument 1"},
	} {
		err := e.Launch("emu_test_barrier_exit", Dim3{X: 1}, Dim3{X: 64}, 0, c.args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("emulator launch with wrong %s: error %v, want one mentioning %q", c.name, err, c.want)
		}
	}
	if err := e.Launch("no_such_kernel", Dim3{X: 1}, Dim3{X: 1}, 0); err == nil {
		t.Error("emulator launch of an unknown kernel succeeded")
	}
	if err := e.Launch("emu_test_barrier_exit", Dim3{X: 1}, Dim3{X: 2048}, 0, Ptr(out), I32(1)); err == nil {
		t.Error("emulator launch of 2048 threads per block succeeded")
	}
}

// BenchmarkEmuFiberSwitch times one fiber switch: each barrier round switches every thread out and back in.
func BenchmarkEmuFiberSwitch(b *testing.B) {
	e := NewEmulator(EmuOptions{})
	defer e.Close()
	out, _ := AllocFrom(e, make([]int32, 1))
	const threads, rounds = 256, 1000
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := e.Launch("emu_test_switch_cost", Dim3{X: 1}, Dim3{X: threads}, 0, I32(rounds), Ptr(out)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/(2*threads*rounds), "ns/switch")
}

// TestEmuOutOfBoundsWriteIsCaught: with guard bands, a kernel writing one element past its buffer fails the launch.
func TestEmuOutOfBoundsWriteIsCaught(t *testing.T) {
	if asanBuild {
		// The canaries are poisoned under -asan: AddressSanitizer aborts the process at the write itself.
		expectASanAbort(t, "oob-write")
		return
	}
	e := newTestEmu(t)
	const n = 100
	out := mustAlloc(t, e, make([]float32, n))
	err := e.Launch("emu_test_oob_write", Dim3{X: 1}, Dim3{X: 128}, 0, Ptr(out), I32(n))
	if err == nil || !strings.Contains(err.Error(), "out-of-bounds write after") || !strings.Contains(err.Error(), "emu_test_oob_write") {
		t.Fatalf("emulator launch with a write past the end: error %v, want an out-of-bounds error naming the kernel", err)
	}
}

// The emulator's device memory is host memory, so its MemInfo must report the host's.
func TestEmuMemInfoIsHostMemory(t *testing.T) {
	be, err := NewBackend(NewEmulator(EmuOptions{}))
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	free, total, err := be.MemInfo()
	if err != nil {
		t.Fatal(err)
	}
	if free <= 0 || total < free || total < 1<<28 {
		t.Fatalf("MemInfo free %d total %d: want 0 < free ≤ total, total ≥ 256 MiB", free, total)
	}
}
