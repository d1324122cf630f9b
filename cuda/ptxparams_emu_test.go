//go:build !cuda

package cuda

import (
	"os"
	"path/filepath"
	"testing"
)

// The committed PTX (what a GPU runs) against the kernels compiled into the emulator (what the tests run): every
// kernel of kernels/ptx has an emulator kernel of the same name with the same parameters. A kernel signature changed
// without `make ptx` fails here, in the default build, before the GPU tier.
func TestPTXParamsMatchTheEmulatorKernels(t *testing.T) {
	files, _ := filepath.Glob("../kernels/ptx/*.ptx")
	sm80, _ := filepath.Glob("../kernels/ptx/sm80/*.ptx")
	files = append(files, sm80...)
	if len(files) == 0 {
		t.Fatal("no PTX under kernels/ptx")
	}
	n := 0
	for _, f := range files {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		entries, err := ptxEntries(string(src))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if len(entries) == 0 {
			t.Errorf("%s: no .entry found", f)
		}
		for _, e := range entries {
			n++
			kinds, sizes, ok := emuKernelSignature(e.name)
			if !ok {
				t.Errorf("%s: kernel %s is not compiled into the emulator", f, e.name)
				continue
			}
			args := make([]Arg, len(kinds))
			for i := range kinds {
				args[i] = Arg{kind: kinds[i], size: uint8(sizes[i])}
			}
			if err := checkArgs(e.params, args); err != nil {
				t.Errorf("%s: %s: PTX and emulator kernel differ (stale PTX? run make ptx): %v", f, e.name, err)
			}
		}
	}
	t.Logf("%d kernels in %d PTX modules match the emulator's", n, len(files))
}

func TestPTXEntriesAndCheckArgs(t *testing.T) {
	const src = `
.version 7.8
.target sm_70
.address_size 64
.visible .entry k1(
	.param .u64 k1_param_0,
	.param .f32 k1_param_1,
	.param .u32 k1_param_2,
	.param .align 8 .b8 k1_param_3[16]
)
.maxntid 256, 1, 1
{
	ret;
}
.visible .entry k2()
{
	ret;
}
`
	entries, err := ptxEntries(src)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 || entries[0].name != "k1" || entries[1].name != "k2" || len(entries[1].params) != 0 {
		t.Fatalf("entries %+v, want k1 (4 parameters) and k2 (none)", entries)
	}
	var sizes []int
	for _, p := range entries[0].params {
		sizes = append(sizes, p.size)
	}
	if len(sizes) != 4 || sizes[0] != 8 || sizes[1] != 4 || sizes[2] != 4 || sizes[3] != 16 || !entries[0].params[1].float {
		t.Fatalf("k1 parameters %v (sizes %v), want .u64 .f32 .u32 .b8[16]", entries[0].params, sizes)
	}
	p := entries[0].params[:3]
	for _, c := range []struct {
		args []Arg
		ok   bool
	}{
		{[]Arg{Ptr(1), F32(1), I32(1)}, true},
		{[]Arg{Ptr(1), F32(1), U32(1)}, true},
		{[]Arg{Ptr(1), F32(1)}, false},                 // one missing
		{[]Arg{Ptr(1), F32(1), I32(1), I32(2)}, false}, // one extra
		{[]Arg{Ptr(1), F32(1), I64(1)}, false},         // 8 bytes for a 4-byte parameter
		{[]Arg{Ptr(1), I32(1), I32(1)}, false},         // an int for a float
		{[]Arg{F64(1), F32(1), I32(1)}, false},         // a double for a pointer
	} {
		if err := checkArgs(p, c.args); (err == nil) != c.ok {
			t.Errorf("checkArgs(%v): error %v, want ok=%v", c.args, err, c.ok)
		}
	}
}
