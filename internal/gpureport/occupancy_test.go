package gpureport

import (
	"math"
	"testing"
)

// Hand-worked occupancies (see Arch.Occupancy for the rules).
func TestOccupancy(t *testing.T) {
	for _, c := range []struct {
		name                string
		a                   Arch
		threads, regs, smem int
		blocks, warps       int
		limiter             string
	}{
		// 122 regs: 122·32 = 3904 → 4096 per warp; 16384/4096 = 4 warps per scheduler, 16 per SM, 2 blocks of 8.
		// smem (27648 + 1024) = 28672 → 167936/28672 = 5 blocks; warps 64/8 = 8.
		{"tf32 conv sm_80", SM80, 256, 122, 27648, 2, 16, "regs"},
		{"tf32 conv sm_90", SM90, 256, 122, 27648, 2, 16, "regs"},
		// 64 regs: 2048 per warp; 8 per scheduler, 32 per SM → 4 blocks of 8 warps.
		{"fp32 conv", SM90, 256, 64, 9216, 4, 32, "regs"},
		// 32 regs: 1024 per warp → 16 per scheduler = 64 warps, as many as the SM holds: regs and warps bind alike.
		{"128-thread row kernel", SM80, 128, 32, 0, 16, 64, "regs+warps"},
		// 48 KiB static: (49152 + 1024) = 50176 per block → 167936/50176 = 3 on sm_80, 233472/50176 = 4 on sm_90.
		{"48 KiB smem sm_80", SM80, 256, 32, 48 << 10, 3, 24, "smem"},
		{"48 KiB smem sm_90", SM90, 256, 32, 48 << 10, 4, 32, "smem"},
		// One thread: one warp per block, 32 blocks at most.
		{"one thread", SM90, 1, 31, 0, 32, 32, "blocks"},
		// 40 regs: 1280 per warp → floor(16384/1280) = 12 per scheduler, 48 per SM → 6 blocks (51 warps if the file
		// were not split between schedulers: still 6).
		{"40 regs", SM90, 256, 40, 0, 6, 48, "regs"},
		// 72 regs × 96 threads: 2304 per warp → 7 per scheduler, 28 per SM → 9 blocks of 3 warps.
		{"72 regs, 3 warps", SM80, 96, 72, 0, 9, 27, "regs"},
	} {
		o, err := c.a.Occupancy(c.threads, c.regs, c.smem)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if o.Blocks != c.blocks || o.Warps != c.warps || o.Limiter != c.limiter {
			t.Errorf("%s: %+v, want %d blocks, %d warps, limited by %s", c.name, o, c.blocks, c.warps, c.limiter)
		}
	}
	if f := (Occupancy{Warps: 16}).Fraction(SM90); f != 0.25 {
		t.Errorf("16 warps = %v of the SM, want 0.25", f)
	}
	for _, c := range []struct{ threads, regs, smem int }{{1024, 255, 0}, {256, 32, 200 << 10}, {2048, 32, 0}} {
		if _, err := SM80.Occupancy(c.threads, c.regs, c.smem); err == nil {
			t.Errorf("%+v fits on sm_80", c)
		}
	}
}

func TestMMAShapes(t *testing.T) {
	for op, want := range map[string]int{
		"HMMA.1684.F32.TF32":   16 * 8 * 4,
		"HMMA.1688.F32.TF32":   16 * 8 * 8,
		"HMMA.16816.F32.BF16":  16 * 8 * 16,
		"HMMA.884.F32.F16":     8 * 8 * 4,
		"HGMMA.64x128x16.F32":  64 * 128 * 16 / 4,
		"IMMA.16832.S32.S8.S8": 16 * 8 * 32,
	} {
		if got, err := mmaFMAs(op); err != nil || got != want {
			t.Errorf("mmaFMAs(%s) = %d, %v; want %d", op, got, err, want)
		}
	}
	for op, want := range map[string]string{"HMMA.1684.F32.TF32": "tf32", "HMMA.16816.F32.BF16": "bf16",
		"HMMA.16816.F32": "fp16", "IMMA.16832.S32.S8.S8": "int"} {
		if got := mmaType(op); got != want {
			t.Errorf("mmaType(%s) = %s, want %s", op, got, want)
		}
	}
}

// The roofline of one launch, worked by hand.
func TestEstimate(t *testing.T) {
	m := H100
	// Issue rate: 67e12 / 64 / 132 warp instructions per second per SM.
	if got, want := m.IssueRate(), 67e12/64/132; math.Abs(got/want-1) > 1e-12 {
		t.Errorf("IssueRate %v, want %v", got, want)
	}
	k := Kernel{Name: "k", Res: Resources{Regs: 64, Smem: 9216}, // 4 blocks of 256 per SM
		Mix: Mix{Total: 4, Count: [numCats]int{CatFFMA: 2, CatInt: 2}, MMAOp: map[string]int{}}}
	mo, err := m.MathOf(k)
	if err != nil || mo.Op != "FFMA" || mo.Required != 1 {
		t.Fatalf("MathOf = %+v, %v; want FFMA needing every issue slot", mo, err)
	}
	// 1056 blocks = 2 full waves of 132·4; FFMA half the mix: 2 instructions per FFMA, each 32 FMAs.
	l := Launch{Kernel: "k", Grid: cudaDim(1056), Block: cudaDim(256)}
	w := Work{FLOPs: 1e12, FMAs: 5e11, Tiled: true, Bytes: 1e9}
	e, err := m.Estimate(l, w, &k)
	if err != nil {
		t.Fatal(err)
	}
	issue := 5e11 / 32 / 0.5 / (m.IssueRate() * 132) // all SMs busy at full rate
	if math.Abs(e.Compute/issue-1) > 1e-9 || e.Memory != 1e9/m.HBM || e.Time != e.Compute || e.Bound() != "compute" {
		t.Errorf("estimate %+v, want compute %v (issue-bound), memory %v", e, issue, 1e9/m.HBM)
	}
	// 66 blocks: one partial wave, one block (8 warps, saturating) on each of 66 SMs; memory at half the SMs' share.
	l.Grid = cudaDim(66)
	e, _ = m.Estimate(l, w, &k)
	if want := 5e11 / 32 / 0.5 / 66 / m.IssueRate(); math.Abs(e.Compute/want-1) > 1e-9 || e.Memory != 1e9/(m.HBM*0.5) {
		t.Errorf("66 blocks: %+v, want compute %v, memory %v", e, want, 1e9/(m.HBM*0.5))
	}
	// A 64-thread block (2 warps) alone on an SM issues at 2/8 of the rate.
	l.Block = cudaDim(64)
	e, _ = m.Estimate(l, w, &k)
	if want := 5e11 / 32 / 0.5 / 66 / (m.IssueRate() * 2 / 8); math.Abs(e.Compute/want-1) > 1e-9 {
		t.Errorf("2-warp blocks: compute %v, want %v", e.Compute, want)
	}
	// A TF32 MMA loop at 100% MMA is bound by the pipe (it needs 46%), not by issue.
	k.Mix = Mix{Total: 1, Count: [numCats]int{CatMMA: 1}, MMAOp: map[string]int{"HMMA.1684.F32.TF32": 1}}
	l.Grid, l.Block = cudaDim(528), cudaDim(256)
	e, _ = m.Estimate(l, w, &k)
	if want := 1e12 / m.TF32; math.Abs(e.Compute/want-1) > 1e-9 {
		t.Errorf("TF32 at 100%% MMA: compute %v, want the pipe's %v", e.Compute, want)
	}
	// Untiled kernels: FLOPs at the FP32 peak; a fill: bytes at HBM speed, whatever its grid.
	e, _ = m.Estimate(Launch{Kernel: "add_f32", Grid: cudaDim(1000), Block: cudaDim(256)}, Work{FLOPs: 1e9, Bytes: 1.2e10}, nil)
	if e.Compute != 1e9/m.FP32 || e.Memory != 1.2e10/m.HBM || e.Bound() != "memory" {
		t.Errorf("add: %+v", e)
	}
	e, _ = m.Estimate(Launch{Kernel: MemsetKernel}, Work{Bytes: 3.35e9}, nil)
	if e.Time != 1e-3 {
		t.Errorf("fill of 3.35 GB: %v s, want 1 ms", e.Time)
	}
}

func TestFamilyAndBaseline(t *testing.T) {
	for k, want := range map[string]string{"conv2d_fwd_tf32": "conv2d_fwd", "conv2d_fwd_f32": "conv2d_fwd",
		"gather_epoch_u8_f32": "gather_epoch_u8", MemsetKernel: MemsetKernel, "x_bf16": "x"} {
		if got := family(k); got != want {
			t.Errorf("family(%s) = %s, want %s", k, got, want)
		}
	}
	p := t.TempDir() + "/b.tsv"
	ms := []Metric{{Key: "a", Value: 208.3}, {Key: "b", Value: 747}}
	if err := WriteBaseline(p, "before", ms); err != nil {
		t.Fatal(err)
	}
	got, err := ReadBaseline(p)
	if err != nil || len(got) != 2 || got["a"] != 208.3 || got["b"] != 747 {
		t.Errorf("ReadBaseline = %v, %v", got, err)
	}
}
