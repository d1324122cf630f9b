//go:build !cuda

package sampler

import (
	"context"
	"math"
	"testing"

	"github.com/ddpmgo/ddpm/cpu"
	"github.com/ddpmgo/ddpm/cuda"
	"github.com/ddpmgo/ddpm/ops"
)

// TestEmuMatchesCPU: every sampler on the GPU path (the CUDA kernels and launchers on the CPU emulator, guarded
// allocations) gives the CPU backend's samples to float32 rounding (2e-5; measured ≤ 4e-7), from the same seed, with
// the exact ε̂ of the Gaussian data as the network, clipping on where the sampler clips.
func TestEmuMatchesCPU(t *testing.T) {
	s := schedule(t, 200)
	emu := cuda.NewEmulator(cuda.EmuOptions{Workers: 2, Guard: true})
	gpu, err := cuda.NewBackend(emu)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		gpu.Close()
		emu.Close()
	})
	const n, d, batch = 3, 97, 2
	run := func(be ops.Backend, opt Options) []float32 {
		sp, err := New(be, s, opt, batch, d)
		if err != nil {
			t.Fatal(err)
		}
		out := make([]float32, n*d)
		if err := sp.Sample(context.Background(), &gaussNet{be: be, s: s, g: gaussData}, n, nil, out, nil); err != nil {
			t.Fatal(err)
		}
		return out
	}
	for _, opt := range []Options{
		{Sampler: DDPM, Steps: 20, Clip: true, Variance: "fixed_small"},
		{Sampler: DDIM, Steps: 10, Eta: 0.5, Clip: true, UnclippedEps: true},
		{Sampler: Euler, Steps: 8, Clip: true},
		{Sampler: EulerMaruyama, Steps: 10},
		{Sampler: Heun, Steps: 6, Churn: 2, Clip: true},
		{Sampler: DPMSolverPP2M, Steps: 8, Clip: true, Spacing: "trailing"},
	} {
		opt.Seed = 13
		a, b := run(cpu.New(), opt), run(gpu, opt)
		worst := 0.0
		for i := range a {
			worst = max(worst, math.Abs(float64(a[i])-float64(b[i])))
		}
		if !(worst <= 2e-5) {
			t.Errorf("%s: emulator and CPU differ by up to %.3g", name(opt), worst)
		} else if testing.Verbose() {
			t.Logf("%-45s max |emu − cpu| = %.3g", name(opt), worst)
		}
	}
}
