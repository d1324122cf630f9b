//go:build cuda

package cuda

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unsafe"

	"gorgonia.org/cu"
)

// Tests of the GPU driver itself (cu.go). They run on a GPU, and without one on the emulated driver
// (kernels/emu/driver: `make test-emu-driver`).

// within fails the test if f does not return in time (a call blocked on a closed GPU's work channel would hang).
func within(t *testing.T, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not return within 20 s", what)
	}
}

func TestGPUCloseIsIdempotentAndLaterCallsFail(t *testing.T) {
	g, err := NewGPU(0)
	if err != nil {
		t.Fatal(err)
	}
	p, err := g.Alloc(1024)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Free(p); err != nil {
		t.Fatal(err)
	}
	within(t, "the first Close", func() {
		if err := g.Close(); err != nil {
			t.Errorf("first Close: %v", err)
		}
	})
	within(t, "the second Close", func() {
		if err := g.Close(); err != nil {
			t.Errorf("second Close: %v, want nil (Close is idempotent)", err)
		}
	})
	var host [16]float32
	calls := map[string]func() error{
		"Alloc":         func() error { _, err := g.Alloc(1024); return err },
		"Free":          func() error { return g.Free(p) },
		"HtoD":          func() error { return g.HtoD(p, unsafe.Pointer(&host[0]), 64) },
		"HtoD 0 bytes":  func() error { return g.HtoD(p, unsafe.Pointer(&host[0]), 0) },
		"DtoH":          func() error { return g.DtoH(unsafe.Pointer(&host[0]), p, 64) },
		"DtoD":          func() error { return g.DtoD(p, p+64, 64) },
		"Memset32":      func() error { return g.Memset32(p, 0, 16) },
		"Memset32 zero": func() error { return g.Memset32(p, 0, 0) },
		"Launch": func() error {
			return g.Launch("scale_f32", Dim3{X: 1}, Dim3{X: 32}, 0, F32(2), Ptr(p), I64(16))
		},
		"Sync":    g.Sync,
		"MemInfo": func() error { _, _, err := g.MemInfo(); return err },
	}
	for name, call := range calls {
		within(t, name+" after Close", func() {
			if err := call(); !errors.Is(err, ErrClosed) {
				t.Errorf("%s after Close: %v, want an error wrapping ErrClosed", name, err)
			}
		})
	}
	within(t, "MemUsed after Close", func() {
		if n := g.MemUsed(); n != 0 {
			t.Errorf("MemUsed after Close = %d, want 0", n)
		}
	})
}

// TestGPULaunchChecksArguments: the driver cannot count kernelParams, so GPU.Launch compares the arguments with the
// kernel's PTX parameters (scale_f32(float alpha, float* x, long long n)).
func TestGPULaunchChecksArguments(t *testing.T) {
	g, err := NewGPU(0)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	p, err := g.Alloc(64)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Free(p)
	for _, args := range [][]Arg{
		{F32(2), Ptr(p)},                  // n missing
		{F32(2), Ptr(p), I64(16), I32(0)}, // one too many
		{F32(2), Ptr(p), I32(16)},         // a 4-byte n for a 64-bit parameter
		{F64(2), Ptr(p), I64(16)},         // a double for a float
		{I32(2), Ptr(p), I64(16)},         // an int for a float
	} {
		err := g.Launch("scale_f32", Dim3{X: 1}, Dim3{X: 32}, 0, args...)
		if err == nil || !strings.Contains(err.Error(), "scale_f32") {
			t.Errorf("Launch(scale_f32, %v): %v, want an error naming the kernel", args, err)
		}
	}
	if err := g.Memset32(p, 0x3f800000, 16); err != nil { // 1.0f
		t.Fatal(err)
	}
	if err := g.Launch("scale_f32", Dim3{X: 1}, Dim3{X: 32}, 0, F32(3), Ptr(p), I64(16)); err != nil {
		t.Fatal(err)
	}
	var out [16]float32
	if err := g.DtoH(unsafe.Pointer(&out[0]), p, 64); err != nil {
		t.Fatal(err)
	}
	for i, v := range out {
		if v != 3 {
			t.Fatalf("scale_f32 element %d = %v, want 3", i, v)
		}
	}
}

// TestGPUKernelFaultIsSticky: a kernel handed a freed buffer faults; the fault surfaces at the next Sync as
// CUDA_ERROR_ILLEGAL_ADDRESS and stays. Only under the emulated driver: a GPU may or may not fault on freed memory.
func TestGPUKernelFaultIsSticky(t *testing.T) {
	g, err := NewGPU(0)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if !strings.Contains(g.Name(), "emudriver") {
		t.Skipf("%s is not the emulated driver", g.Name())
	}
	p, err := g.Alloc(64)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Free(p); err != nil {
		t.Fatal(err)
	}
	if err := g.Launch("scale_f32", Dim3{X: 1}, Dim3{X: 32}, 0, F32(3), Ptr(p), I64(16)); err != nil {
		t.Fatalf("Launch returned %v; a kernel fault should surface at the next synchronising call", err)
	}
	for i := 0; i < 2; i++ {
		if err := g.Sync(); !errors.Is(err, cu.IllegalAddress) {
			t.Fatalf("Sync %d after the faulting kernel: %v, want CUDA_ERROR_ILLEGAL_ADDRESS", i+1, err)
		}
	}
	if _, err := g.Alloc(64); !errors.Is(err, cu.IllegalAddress) {
		t.Fatalf("Alloc after the fault: %v, want the sticky CUDA_ERROR_ILLEGAL_ADDRESS", err)
	}
}

// TestGPUStreams: the Streams capability (a second stream ordered with the default one by events, as package
// cuda/nccl uses it) makes, records, waits on and destroys its handles without error, and leaves the default stream's
// results as they were.
func TestGPUStreams(t *testing.T) {
	g, err := NewGPU(0)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	var st Streams = g
	s, err := st.NewStream()
	if err != nil || s == 0 {
		t.Fatalf("NewStream: %#x, %v", s, err)
	}
	ready, err := st.NewEvent()
	if err != nil {
		t.Fatal(err)
	}
	done, err := st.NewEvent()
	if err != nil {
		t.Fatal(err)
	}
	p, err := g.Alloc(64)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Free(p)
	if err := g.Memset32(p, 0x3f800000, 16); err != nil { // 1.0f
		t.Fatal(err)
	}
	for _, step := range []func() error{
		func() error { return g.Launch("scale_f32", Dim3{X: 1}, Dim3{X: 32}, 0, F32(3), Ptr(p), I64(16)) },
		func() error { return st.Record(ready, 0) },
		func() error { return st.Wait(s, ready) },
		func() error { return st.Record(done, s) },
		func() error { return st.Wait(0, done) },
		func() error { return g.Launch("scale_f32", Dim3{X: 1}, Dim3{X: 32}, 0, F32(2), Ptr(p), I64(16)) },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	var out [16]float32
	if err := g.DtoH(unsafe.Pointer(&out[0]), p, 64); err != nil {
		t.Fatal(err)
	}
	if out[0] != 6 || out[15] != 6 {
		t.Errorf("after two scales: %v, want 6", out[0])
	}
	if err := g.Sync(); err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{st.DestroyEvent(ready), st.DestroyEvent(done), st.DestroyStream(s)} {
		if err != nil {
			t.Error(err)
		}
	}
	if err := st.Record(ready, 0); err == nil {
		t.Error("Record of a destroyed event: no error")
	}
}
