package cpu

import (
	"math"
	"math/rand"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/ddpmgo/ddpm/ops"
)

// roundBF16Ref is the nearest bfloat16 by comparison: the two bf16 neighbours of v (its float32 bits truncated to
// the upper 16, and the next one up in magnitude), the closer in float64, ties to the even one (bit 16 clear).
func roundBF16Ref(v float32) float32 {
	b := math.Float32bits(v)
	lo := b &^ 0xffff
	hi := lo + 0x10000 // the next bf16 away from zero (Inf after the largest finite one)
	dl := math.Abs(float64(v) - float64(math.Float32frombits(lo)))
	dh := math.Abs(float64(math.Float32frombits(hi)) - float64(v))
	if lo&0x7fffffff == 0x7f7f0000 { // the largest finite bf16 (0x1.fep127): past its half ulp IEEE rounds to Inf
		if math.Abs(float64(v)) >= 0x1.ffp127 { // the midpoint, where the tie goes to Inf (the even side)
			return math.Float32frombits(hi)
		}
		return math.Float32frombits(lo)
	}
	switch {
	case dl < dh:
		return math.Float32frombits(lo)
	case dh < dl:
		return math.Float32frombits(hi)
	case lo&0x10000 == 0:
		return math.Float32frombits(lo)
	}
	return math.Float32frombits(hi)
}

func TestRoundBF16(t *testing.T) {
	for _, c := range []struct{ in, want uint32 }{
		{0x3f800000, 0x3f800000}, // 1
		{0x3f808000, 0x3f800000}, // 1 + 2^-8: a tie, to the even 1
		{0x3f818000, 0x3f820000}, // 1 + 3·2^-8: a tie, to the even 1 + 2^-6
		{0x3f808001, 0x3f810000}, // just past the tie
		{0x3f807fff, 0x3f800000}, // just below it
		{0xbf808001, 0xbf810000}, // negative: the same in magnitude
		{0x80000000, 0x80000000}, // −0
		{0x00000001, 0x00000000}, // the smallest subnormal rounds to 0
		{0x007f8000, 0x00800000}, // a subnormal tie, carried into the smallest normal
		{0x7f800000, 0x7f800000}, // +Inf
		{0xff800000, 0xff800000}, // −Inf
		{0x7f7fffff, 0x7f800000}, // the largest float32 is past the largest bf16's half ulp: Inf
		{0x7f7f7fff, 0x7f7f0000}, // below the half ulp: the largest bf16
	} {
		got := math.Float32bits(RoundBF16(math.Float32frombits(c.in)))
		if got != c.want {
			t.Errorf("RoundBF16(%#08x) = %#08x, want %#08x", c.in, got, c.want)
		}
	}
	for _, nan := range []uint32{0x7fc00000, 0x7f800001, 0xff80ffff, 0x7fbfffff} {
		if r := RoundBF16(math.Float32frombits(nan)); r == r || math.Float32bits(r)&0xffff != 0 || (math.Float32bits(r)^nan)>>31 != 0 {
			t.Errorf("RoundBF16(NaN %#08x) = %#08x, want a NaN with the same sign and the low 16 bits clear", nan, math.Float32bits(r))
		}
	}
	r := rand.New(rand.NewSource(1))
	for i := 0; i < 200000; i++ {
		v := math.Float32frombits(r.Uint32())
		if v != v {
			continue
		}
		if got, want := RoundBF16(v), roundBF16Ref(v); math.Float32bits(got) != math.Float32bits(want) {
			t.Fatalf("RoundBF16(%g = %#08x) = %#08x, the nearest (ties even) is %#08x", v, math.Float32bits(v),
				math.Float32bits(got), math.Float32bits(want))
		}
	}
}

func TestSetPrecision(t *testing.T) {
	be := New()
	if p := be.Precision(); p != ops.FP32 {
		t.Fatalf("new backend: precision %q", p)
	}
	if err := be.SetPrecision(ops.TF32); err == nil || !strings.Contains(err.Error(), "GPU") {
		t.Errorf("SetPrecision(tf32) = %v, want a refusal naming the GPU", err)
	}
	if err := be.SetPrecision("fp8"); err == nil {
		t.Error("SetPrecision(fp8) accepted")
	}
	// A CPU without bf16 instructions: refused, naming them, and the backend stays fp32.
	old := cpuBF16
	cpuBF16 = func() (bool, bool) { return false, false }
	err := be.SetPrecision(ops.BF16)
	cpuBF16 = old
	if err == nil || !strings.Contains(err.Error(), "avx512_bf16") || !strings.Contains(err.Error(), "amx_bf16") {
		t.Errorf("SetPrecision(bf16) without the instructions = %v, want a refusal naming avx512_bf16 and amx_bf16", err)
	}
	if p := be.Precision(); p != ops.FP32 {
		t.Errorf("after a refused bf16: precision %q", p)
	}
	// The float64 backend emulates bf16 anywhere (the reference of the bf16 conformance cases).
	ref := New64()
	if err := ref.SetPrecision(ops.BF16); err != nil || ref.Precision() != ops.BF16 {
		t.Errorf("New64().SetPrecision(bf16) = %v, precision %q", err, ref.Precision())
	}
	if err := ref.SetPrecision(ops.FP32); err != nil || ref.Precision() != ops.FP32 {
		t.Errorf("back to fp32: %v, precision %q", err, ref.Precision())
	}
}

func TestBF16Kernel(t *testing.T) {
	for name, want := range map[string]bool{
		"jit_bf16:avx512_core_bf16":    true,
		"brgconv:avx512_core_amx_bf16": true,
		"brg:avx512_core_amx":          true,
		"jit:avx512_core":              false, // fp32, or bf16 emulated on plain AVX-512
		"jit_bf16:avx512_core":         false, // bf16 emulated
		"gemm:jit":                     false,
		"ref:any":                      false,
	} {
		if got := bf16Kernel(name); got != want {
			t.Errorf("bf16Kernel(%q) = %v, want %v", name, got, want)
		}
	}
}

// TestSetPrecisionOneDNNISA runs itself again with oneDNN held to plain AVX-512 (ONEDNN_MAX_CPU_ISA=AVX512_CORE):
// the CPU has the instructions (when it does) but oneDNN will not use them, and SetPrecision must say so rather than
// run bf16 emulated.
func TestSetPrecisionOneDNNISA(t *testing.T) {
	if os.Getenv("DDPM_TEST_ISA_CHILD") == "1" {
		err := New().SetPrecision(ops.BF16)
		if err == nil || !strings.Contains(err.Error(), "oneDNN chose") {
			t.Fatalf("SetPrecision(bf16) with oneDNN limited to AVX512_CORE = %v, want a refusal naming oneDNN's choice", err)
		}
		t.Log(err)
		return
	}
	if avx, amx := cpuBF16(); !avx && !amx {
		t.Skip("this CPU has no bf16 instructions: SetPrecision refuses bf16 before asking oneDNN (TestSetPrecision)")
	}
	if New().dn == nil {
		t.Skip("built without cgo: no oneDNN")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSetPrecisionOneDNNISA$", "-test.v")
	cmd.Env = append(os.Environ(), "DDPM_TEST_ISA_CHILD=1", "ONEDNN_MAX_CPU_ISA=AVX512_CORE")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}
