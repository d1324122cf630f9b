package gpureport

import (
	"testing"

	"github.com/ddpmgo/ddpm/cuda"
)

func cudaDim(x int) cuda.Dim3 { return cuda.Dim3{X: x} }

func TestParsePtxasV(t *testing.T) {
	const sm80 = `ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'transpose_f32' for 'sm_80'
ptxas info    : Function properties for transpose_f32
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 26 registers, 4224 bytes smem, 380 bytes cmem[0]
ptxas info    : Compiling entry function 'spiller' for 'sm_80'
ptxas info    : Function properties for spiller
    16 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 255 registers, 380 bytes cmem[0]
`
	const sm90 = `ptxas info    : Compiling entry function 'transpose_f32' for 'sm_90'
ptxas info    : Function properties for transpose_f32
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 32 registers, 4224 bytes smem
`
	r, err := ParsePtxasV(sm80)
	if err != nil {
		t.Fatal(err)
	}
	if r["transpose_f32"] != (Resources{Regs: 26, Smem: 4224}) ||
		r["spiller"] != (Resources{Regs: 255, Stack: 16, SpillStores: 8, SpillLoads: 12}) {
		t.Errorf("sm_80: %+v", r)
	}
	r, err = ParsePtxasV(sm90)
	if err != nil || r["transpose_f32"] != (Resources{Regs: 32, Smem: 4224}) {
		t.Errorf("sm_90: %+v, %v", r, err)
	}
	if _, err := ParsePtxasV("ptxas info    : Compiling entry function 'x' for 'sm_90'\n"); err == nil {
		t.Error("an entry without a register count parsed")
	}
}

func TestParsePTX(t *testing.T) {
	const src = `//
.version 7.8
.target sm_80
.address_size 64

.visible .entry a_f32(
	.param .u64 a_f32_param_0
)
.maxntid 256, 1, 1
{
	ret;
}
.visible .entry b_f32(
	.param .u64 b_f32_param_0
)
{
	// .maxntid 128, 1, 1 in the body is not a directive of b_f32
	ret;
}
`
	info, err := ParsePTX(src)
	if err != nil {
		t.Fatal(err)
	}
	if info.Target != 80 || len(info.Entries) != 2 || info.Entries[1] != "b_f32" || info.MaxNTID["a_f32"] != 256 ||
		info.MaxNTID["b_f32"] != 0 {
		t.Errorf("%+v", info)
	}
}

func TestResolve(t *testing.T) {
	ks := []Kernel{
		{Module: "kernels/ptx/conv2d.ptx", Target: 70, Name: "c", SM: 90},
		{Module: "kernels/ptx/sm80/conv2d.ptx", Target: 80, Name: "c", SM: 90},
		{Module: "kernels/ptx/sm80/conv2d.ptx", Target: 80, Name: "c", SM: 80},
		{Module: "kernels/ptx/add.ptx", Target: 70, Name: "a", SM: 90},
	}
	r := Resolve(ks, 90)
	if len(r) != 2 || r["c"].Module != "kernels/ptx/sm80/conv2d.ptx" || r["c"].SM != 90 || r["a"].Target != 70 {
		t.Errorf("Resolve = %+v", r)
	}
}
