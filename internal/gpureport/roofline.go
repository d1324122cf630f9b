package gpureport

import (
	"fmt"
	"regexp"
	"strconv"
)

// Machine is the GPU of the roofline.
type Machine struct {
	Name       string
	Arch       Arch
	SMs        int
	FP32       float64 // FLOP/s of FFMA (dense)
	TF32       float64 // FLOP/s of TF32 tensor-core MMA (dense)
	BF16       float64 // FLOP/s of BF16/FP16 tensor-core MMA (dense)
	HBM        float64 // bytes/s
	Launch     float64 // seconds: the launch-overhead floor of one launch or fill
	SatWarps   int     // resident warps per SM from which a main loop issues at its full rate
	WarpFFMAs  int     // FMAs of one warp FFMA instruction
	IssueWidth int     // warp instructions per SM per cycle (one per scheduler)
}

// H100 is the H100 SXM5 of the issue: NVIDIA's datasheet figures (dense BF16 989 TFLOP/s, TF32 495, FP32 67,
// HBM3 3.35 TB/s), 132 SMs.
var H100 = Machine{Name: "H100 SXM", Arch: SM90, SMs: 132, FP32: 67e12, TF32: 495e12, BF16: 989e12, HBM: 3.35e12,
	Launch: 4e-6, SatWarps: 8, WarpFFMAs: 32, IssueWidth: 4}

// IssueRate is the SM's warp instructions per second: the FP32 peak is one warp FFMA per scheduler per cycle, so
// FP32/(2·32)/SMs.
func (m Machine) IssueRate() float64 { return m.FP32 / float64(2*m.WarpFFMAs) / float64(m.SMs) }

// MathOp describes the multiply-add instruction a main loop is built on.
type MathOp struct {
	Op       string  // "FFMA", "HMMA.1684.F32.TF32"
	FMAs     int     // multiply-adds of one warp instruction
	Peak     float64 // FLOP/s of its pipe on the machine
	Type     string  // "fp32", "tf32", "bf16", "fp16", …
	Cat      Cat
	Required float64 // the share of issued instructions it needs to reach Peak
}

var reMMAShape = regexp.MustCompile(`^(?:16(8)(\d+)|(8)(8)(\d+)|(\d+)x(\d+)x(\d+))$`)

// mmaFMAs is the multiply-adds of one warp MMA instruction from its shape modifier: "1684" m16n8k4 = 512,
// "16816" = 2048; a warpgroup "64x128x16" is shared by its 4 warps.
func mmaFMAs(op string) (int, error) {
	parts := splitOp(op)
	if len(parts) < 2 {
		return 0, fmt.Errorf("%s: no shape", op)
	}
	m := reMMAShape.FindStringSubmatch(parts[1])
	if m == nil {
		return 0, fmt.Errorf("%s: shape %q not understood", op, parts[1])
	}
	n := func(s string) int { v, _ := strconv.Atoi(s); return v }
	switch {
	case m[1] != "":
		return 16 * 8 * n(m[2]), nil
	case m[3] != "":
		return 8 * 8 * n(m[5]), nil
	default:
		return n(m[6]) * n(m[7]) * n(m[8]) / 4, nil
	}
}

func splitOp(op string) []string {
	var out []string
	s := 0
	for i := 0; i <= len(op); i++ {
		if i == len(op) || op[i] == '.' {
			out = append(out, op[s:i])
			s = i + 1
		}
	}
	return out
}

// mmaType is the input type of an MMA opcode: TF32, BF16, or FP16 when none is named (HMMA.16816.F32 takes F16).
func mmaType(op string) string {
	for _, p := range splitOp(op)[1:] {
		switch p {
		case "TF32":
			return "tf32"
		case "BF16":
			return "bf16"
		case "E4M3", "E5M2":
			return "fp8"
		case "S8", "U8", "S4", "U4":
			return "int"
		}
	}
	if b := splitOp(op)[0]; b == "HMMA" || b == "HGMMA" {
		return "fp16"
	}
	return "other"
}

// MathOf is the math instruction of a kernel's main loop: its most frequent MMA when it has any, else FFMA.
func (m Machine) MathOf(k Kernel) (MathOp, error) {
	best, n := "", 0
	for op, c := range k.Mix.MMAOp {
		if c > n || (c == n && op < best) {
			best, n = op, c
		}
	}
	var mo MathOp
	if n > 0 {
		f, err := mmaFMAs(best)
		if err != nil {
			return mo, err
		}
		mo = MathOp{Op: best, FMAs: f, Type: mmaType(best), Cat: CatMMA}
		switch mo.Type {
		case "tf32":
			mo.Peak = m.TF32
		case "bf16", "fp16":
			mo.Peak = m.BF16
		default:
			return mo, fmt.Errorf("%s: no peak for %s MMAs", k.Name, mo.Type)
		}
	} else if k.Mix.Count[CatFFMA] > 0 {
		mo = MathOp{Op: "FFMA", FMAs: m.WarpFFMAs, Peak: m.FP32, Type: "fp32", Cat: CatFFMA}
	} else {
		return mo, fmt.Errorf("%s: no FFMA or MMA in its main loop", k.Name)
	}
	mo.Required = mo.Peak / float64(2*mo.FMAs) / (m.IssueRate() * float64(m.SMs))
	return mo, nil
}

// Estimate is the on-paper time of one launch.
type Estimate struct {
	Compute, Memory float64 // seconds
	Time            float64 // max(Compute, Memory)
	Math            string  // the math instruction the compute time assumes ("" for untiled kernels)
}

// Bound is "compute" or "memory", whichever sets Time.
func (e Estimate) Bound() string {
	if e.Compute >= e.Memory {
		return "compute"
	}
	return "memory"
}

// Estimate costs launch l of work w on m; k is the kernel as the machine loads it (nil for a fill).
//
// Memory: Bytes / (HBM · min(1, blocks/SMs)) — a grid of fewer blocks than SMs reaches only that share.
//
// Compute of a tiled GEMM kernel, from its main loop's mix: with f the share of the loop's issued instructions that
// are its math instruction (FMAs per instruction F), the kernel issues W = FMAs/F/f warp instructions in all. Blocks
// run in waves of SMs × (resident blocks per SM); a wave whose busiest SM holds b blocks takes
//
//	max( b·W_block / (issue · min(1, b·warps per block / SatWarps)),  b·2·FMAs_block / (peak/SMs) )
//
// the first term the issue limit (one warp instruction per scheduler per cycle, less when fewer than SatWarps warps
// are resident to hide latency), the second the math pipe's peak. Untiled kernels: FLOPs / (FP32 · min(1, blocks/SMs)).
func (m Machine) Estimate(l Launch, w Work, k *Kernel) (Estimate, error) {
	var e Estimate
	fill := 1.0
	if !l.IsDriverOp() {
		fill = min(1, float64(l.Blocks())/float64(m.SMs))
	}
	e.Memory = w.Bytes / (m.HBM * fill)
	switch {
	case w.Tiled:
		if k == nil {
			return e, fmt.Errorf("%s: no SASS", l.Kernel)
		}
		mo, err := m.MathOf(*k)
		if err != nil {
			return e, err
		}
		share := k.Mix.Share(mo.Cat)
		occ, err := m.Arch.Occupancy(l.Threads(), k.Res.Regs, k.Res.Smem+l.Smem)
		if err != nil {
			return e, fmt.Errorf("%s: %w", l.Kernel, err)
		}
		if occ.Blocks < 1 {
			return e, fmt.Errorf("%s: no block fits on an SM", l.Kernel)
		}
		blocks := float64(l.Blocks())
		instBlock := w.FMAs / float64(mo.FMAs) / share / blocks
		flopBlock := 2 * w.FMAs / blocks
		wpb := float64(ceilDiv(l.Threads(), 32))
		wave := func(b float64) float64 {
			issue := b * instBlock / (m.IssueRate() * min(1, b*wpb/float64(m.SatWarps)))
			pipe := b * flopBlock / (mo.Peak / float64(m.SMs))
			return max(issue, pipe)
		}
		capacity := m.SMs * occ.Blocks
		full, rem := l.Blocks()/capacity, l.Blocks()%capacity
		e.Compute = float64(full) * wave(float64(occ.Blocks))
		if rem > 0 {
			e.Compute += wave(float64(ceilDiv(rem, m.SMs)))
		}
		e.Math = mo.Op
	case !l.IsDriverOp():
		e.Compute = w.FLOPs / (m.FP32 * fill)
	}
	e.Time = max(e.Compute, e.Memory)
	return e, nil
}
