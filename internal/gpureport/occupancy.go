package gpureport

import (
	"fmt"
	"strings"
)

// Arch holds the per-SM limits that bound how many blocks of a kernel are resident at once (CUDA C++ Programming
// Guide, "Technical Specifications per Compute Capability", and the rules of cuda_occupancy.h).
type Arch struct {
	SM            int    // 80, 90
	Name          string // what the figures are for
	Regs          int    // 32-bit registers per SM
	RegsPerBlock  int    // per block
	RegUnit       int    // registers are allocated per warp in units of this many
	SubPartitions int    // the register file is split between this many schedulers
	MaxRegsThread int
	Threads       int // resident threads per SM
	Warps         int
	Blocks        int // resident blocks per SM
	Smem          int // shared memory per SM available to blocks (the largest carve-out), bytes
	SmemPerBlock  int // largest shared memory per block, bytes
	SmemReserved  int // shared memory the system reserves per block, bytes
	SmemUnit      int // shared memory allocation granularity, bytes
}

// The two architectures of the report.
var (
	SM80 = Arch{SM: 80, Name: "sm_80 (A100)", Regs: 65536, RegsPerBlock: 65536, RegUnit: 256, SubPartitions: 4,
		MaxRegsThread: 255, Threads: 2048, Warps: 64, Blocks: 32, Smem: 164 << 10, SmemPerBlock: 163 << 10,
		SmemReserved: 1024, SmemUnit: 128}
	SM90 = Arch{SM: 90, Name: "sm_90 (H100)", Regs: 65536, RegsPerBlock: 65536, RegUnit: 256, SubPartitions: 4,
		MaxRegsThread: 255, Threads: 2048, Warps: 64, Blocks: 32, Smem: 228 << 10, SmemPerBlock: 227 << 10,
		SmemReserved: 1024, SmemUnit: 128}
	Archs = []Arch{SM80, SM90}
)

// Occupancy is the theoretical residency of a kernel on one SM.
type Occupancy struct {
	Blocks  int    // resident blocks per SM
	Warps   int    // resident warps per SM
	Limiter string // which limits bind: "regs", "smem", "warps", "blocks" (joined by "+")
}

// Fraction is resident warps over the SM's maximum.
func (o Occupancy) Fraction(a Arch) float64 { return float64(o.Warps) / float64(a.Warps) }

// Occupancy computes resident blocks of threads threads with regs registers per thread and smem bytes of shared
// memory (static + dynamic) per block, as cudaOccMaxActiveBlocksPerMultiprocessor does:
//
//	regs:   warp registers = roundup(regs·32, RegUnit); each of the SubPartitions quarters of the register file holds
//	        floor(Regs/SubPartitions / warp registers) warps; blocks = those warps × SubPartitions / warps per block
//	smem:   per block roundup(smem + SmemReserved, SmemUnit); blocks = floor(Smem / that)
//	warps:  floor(Warps / warps per block);  blocks: Blocks
func (a Arch) Occupancy(threads, regs, smem int) (Occupancy, error) {
	if threads < 1 || threads > 1024 {
		return Occupancy{}, fmt.Errorf("%d threads per block", threads)
	}
	wpb := ceilDiv(threads, 32)
	regWarp := roundUp(max(regs, 1)*32, a.RegUnit)
	if regs > a.MaxRegsThread || regWarp*wpb > a.RegsPerBlock || regWarp*roundUp(wpb, a.SubPartitions) > a.RegsPerBlock {
		return Occupancy{}, fmt.Errorf("%d registers × %d threads exceed the per-block limit", regs, threads)
	}
	smemBlock := roundUp(smem+a.SmemReserved, a.SmemUnit)
	if smem > a.SmemPerBlock {
		return Occupancy{}, fmt.Errorf("%d bytes of shared memory exceed the per-block limit %d", smem, a.SmemPerBlock)
	}
	lim := map[string]int{
		"regs":   (a.Regs / a.SubPartitions / regWarp) * a.SubPartitions / wpb,
		"smem":   a.Smem / smemBlock,
		"warps":  a.Warps / wpb,
		"blocks": a.Blocks,
	}
	b := a.Blocks
	for _, v := range lim {
		b = min(b, v)
	}
	var why []string
	for _, k := range []string{"regs", "smem", "warps", "blocks"} {
		if lim[k] == b {
			why = append(why, k)
		}
	}
	return Occupancy{Blocks: b, Warps: b * wpb, Limiter: strings.Join(why, "+")}, nil
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }
func roundUp(a, b int) int { return ceilDiv(a, b) * b }
