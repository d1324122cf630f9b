package gpureport

import (
	"testing"
)

// A GEMM-shaped function as cuobjdump prints it: set-up, a k-loop (0x40–0xd0) with two HMMAs, an epilogue store
// loop (0xf0–0x120) without math, EXIT, the trap loop and padding.
const cuobjdumpGEMM = `
	code for sm_90
		Function : toy_gemm
	.headerflags    @"EF_CUDA_SM90 EF_CUDA_PTX_SM(EF_CUDA_SM90)"
        /*0000*/                   LDC R1, c[0x0][0x28] ;                    /* 0x00000a00ff017b82 */
                                                                              /* 0x000fe20000000800 */
        /*0010*/                   S2R R0, SR_TID.X ;                        /* 0x0000000000007919 */
                                                                              /* 0x000e220000002100 */
        /*0020*/                   HFMA2.MMA R9, -RZ, RZ, 0, 0 ;             /* 0x00000000ff097435 */
                                                                              /* 0x000fe200000001ff */
        /*0030*/              @!P0 BRA 0xe0 ;                                /* 0x000000a000008947 */
                                                                              /* 0x000fea0003800000 */
        /*0040*/                   LDG.E.CONSTANT R2, [R4.64] ;              /* 0x0000000404027981 */
                                                                              /* 0x000ea2000c1e9900 */
        /*0050*/                   STS [R3], R2 ;                            /* 0x0000000203007388 */
                                                                              /* 0x004fe80000000800 */
        /*0060*/                   BAR.SYNC 0x0 ;                            /* 0x0000000000007b1d */
                                                                              /* 0x000fec0000010000 */
        /*0070*/                   LDS R8, [R3+0x40] ;                       /* 0x0000400003087984 */
                                                                              /* 0x000e280000000800 */
        /*0080*/                   HMMA.1684.F32.TF32 R12, R8, R10, R12 ;    /* 0x0000000a080c723c */
                                                                              /* 0x001ff00000081000 */
        /*0090*/                   HMMA.1684.F32.TF32 R16, R8, R11, R16 ;    /* 0x0000000b0810723c */
                                                                              /* 0x000ff00000081010 */
        /*00a0*/                   IADD3 R5, R5, 0x10, RZ ;                  /* 0x0000001005057810 */
                                                                              /* 0x000fc80007ffe0ff */
        /*00b0*/                   ISETP.GE.AND P0, PT, R5, R6, PT ;         /* 0x000000060500720c */
                                                                              /* 0x000fe20003f06270 */
        /*00c0*/                   BAR.SYNC 0x0 ;                            /* 0x0000000000007b1d */
                                                                              /* 0x000fec0000010000 */
        /*00d0*/              @!P0 BRA 0x40 ;                                /* 0xffffff6000008947 */
                                                                              /* 0x000fea000383ffff */
        /*00e0*/                   MOV R7, RZ ;                              /* 0x000000ff00077202 */
                                                                              /* 0x000fe20000000f00 */
        /*00f0*/                   STG.E [R20.64], R12 ;                     /* 0x0000000c14007986 */
                                                                              /* 0x000fe2000c101904 */
        /*0100*/                   IADD3 R7, R7, 0x1, RZ ;                   /* 0x0000000107077810 */
                                                                              /* 0x000fc80007ffe0ff */
        /*0110*/                   ISETP.GE.AND P1, PT, R7, 0x4, PT ;        /* 0x000000040700780c */
                                                                              /* 0x000fda0003f26270 */
        /*0120*/              @!P1 BRA 0xf0 ;                                /* 0xfffffffc00008947 */
                                                                              /* 0x000fea000383ffff */
        /*0130*/                   EXIT ;                                    /* 0x000000000000794d */
                                                                              /* 0x000fea0003800000 */
        /*0140*/                   BRA 0x140;                                /* 0xfffffff000007947 */
                                                                              /* 0x000fc0000383ffff */
        /*0150*/                   NOP;                                      /* 0x0000000000007918 */
                                                                              /* 0x000fc00000000000 */
		..........


		Function : toy_straight
	.headerflags    @"EF_CUDA_SM90 EF_CUDA_PTX_SM(EF_CUDA_SM90)"
        /*0000*/                   LDG.E R2, [R4.64] ;                       /* 0x0000000404027981 */
                                                                              /* 0x000ea2000c1e9900 */
        /*0010*/                   FFMA R2, R2, R2, 1 ;                      /* 0x3f80000002027423 */
                                                                              /* 0x004fca0000000002 */
        /*0020*/                   STG.E [R4.64], R2 ;                       /* 0x0000000204007986 */
                                                                              /* 0x000fe2000c101904 */
        /*0030*/                   EXIT ;                                    /* 0x000000000000794d */
                                                                              /* 0x000fea0003800000 */
        /*0040*/                   BRA 0x40;                                 /* 0xfffffff000007947 */
                                                                              /* 0x000fc0000383ffff */
        /*0050*/                   NOP;                                      /* 0x0000000000007918 */
                                                                              /* 0x000fc00000000000 */
`

// The same GEMM as nvdisasm -c prints it: sections, labels for the targets.
const nvdisasmGEMM = `
	.headerflags	@"EF_CUDA_TEXMODE_UNIFIED EF_CUDA_64BIT_ADDRESS EF_CUDA_SM90 EF_CUDA_VIRTUAL_SM(EF_CUDA_SM90)"
	.elftype	@"ET_EXEC"
//--------------------- .text.toy_gemm           --------------------------
	.section	.text.toy_gemm,"ax",@progbits
	.sectionflags	@"SHF_BARRIERS=1"
	.align	128
        .global         toy_gemm
        .type           toy_gemm,@function
        .size           toy_gemm,(.L_x_9 - toy_gemm)
        .other          toy_gemm,@"STO_CUDA_ENTRY STV_DEFAULT"
toy_gemm:
.text.toy_gemm:
        /*0000*/                   LDC R1, c[0x0][0x28] ;
        /*0010*/                   S2R R0, SR_TID.X ;
        /*0020*/                   HFMA2.MMA R9, -RZ, RZ, 0, 0 ;
        /*0030*/              @!P0 BRA ` + "`" + `(.L_x_0) ;
.L_x_1:
        /*0040*/                   LDG.E.CONSTANT R2, [R4.64] ;
        /*0050*/                   STS [R3], R2 ;
        /*0060*/                   BAR.SYNC 0x0 ;
        /*0070*/                   LDS R8, [R3+0x40] ;
        /*0080*/                   HMMA.1684.F32.TF32 R12, R8, R10, R12 ;
        /*0090*/                   HMMA.1684.F32.TF32 R16, R8, R11, R16 ;
        /*00a0*/                   IADD3 R5, R5, 0x10, RZ ;
        /*00b0*/                   ISETP.GE.AND P0, PT, R5, R6, PT ;
        /*00c0*/                   BAR.SYNC 0x0 ;
        /*00d0*/              @!P0 BRA ` + "`" + `(.L_x_1) ;
.L_x_0:
        /*00e0*/                   MOV R7, RZ ;
.L_x_2:
        /*00f0*/                   STG.E [R20.64], R12 ;
        /*0100*/                   IADD3 R7, R7, 0x1, RZ ;
        /*0110*/                   ISETP.GE.AND P1, PT, R7, 0x4, PT ;
        /*0120*/              @!P1 BRA ` + "`" + `(.L_x_2) ;
        /*0130*/                   EXIT ;
.L_x_3:
        /*0140*/                   BRA ` + "`" + `(.L_x_3);
        /*0150*/                   NOP;
.L_x_9:
`

func checkToyGEMM(t *testing.T, f Function) {
	t.Helper()
	if f.Name != "toy_gemm" || len(f.Insts) != 22 {
		t.Fatalf("function %q with %d instructions, want toy_gemm with 22", f.Name, len(f.Insts))
	}
	if in := f.Insts[3]; in.Pred != "@!P0" || in.Op != "BRA" || in.Target != 0xe0 {
		t.Errorf("instruction 3 = %+v, want @!P0 BRA to 0xe0", in)
	}
	loops := f.Loops()
	if len(loops) != 2 || loops[0] != (Loop{0x40, 0xd0}) || loops[1] != (Loop{0xf0, 0x120}) {
		t.Errorf("loops %v, want [{0x40 0xd0} {0xf0 0x120}] (the trap loop at 0x140 excluded)", loops)
	}
	l, body, ok := f.MainLoop()
	if !ok || l != (Loop{0x40, 0xd0}) || len(body) != 10 {
		t.Fatalf("main loop %v (%d instructions, loop %v), want the k-loop 0x40–0xd0 of 10", l, len(body), ok)
	}
	m := Classify(body)
	want := map[Cat]int{CatMMA: 2, CatLDG: 1, CatSTS: 1, CatLDS: 1, CatBar: 2, CatInt: 2, CatCtl: 1}
	for c := Cat(0); c < numCats; c++ {
		if m.Count[c] != want[c] {
			t.Errorf("%v: %d, want %d", c, m.Count[c], want[c])
		}
	}
	if m.Share(CatMMA) != 0.2 || m.MMAOp["HMMA.1684.F32.TF32"] != 2 {
		t.Errorf("MMA share %v, ops %v", m.Share(CatMMA), m.MMAOp)
	}
	if c := CategoryOf(f.Insts[2]); c != CatInt {
		t.Errorf("HFMA2.MMA (a move) classed %v", c)
	}
}

func TestParseCuobjdump(t *testing.T) {
	fns, err := ParseSASS(cuobjdumpGEMM)
	if err != nil {
		t.Fatal(err)
	}
	if len(fns) != 2 {
		t.Fatalf("%d functions, want 2", len(fns))
	}
	checkToyGEMM(t, fns[0])
	// No loop: the whole function up to its last EXIT.
	l, body, ok := fns[1].MainLoop()
	if ok || l != (Loop{0, 0x30}) || len(body) != 4 {
		t.Errorf("straight-line function: %v, %d instructions, loop %v; want the 4 up to EXIT, no loop", l, len(body), ok)
	}
	if m := Classify(body); m.Count[CatFFMA] != 1 || m.Count[CatLDG] != 1 || m.Count[CatSTG] != 1 {
		t.Errorf("straight-line mix %+v", m.Count)
	}
}

func TestParseNvdisasm(t *testing.T) {
	fns, err := ParseSASS(nvdisasmGEMM)
	if err != nil {
		t.Fatal(err)
	}
	if len(fns) != 1 {
		t.Fatalf("%d functions, want 1", len(fns))
	}
	checkToyGEMM(t, fns[0])
	if _, err := ParseSASS(".text.f:\n        /*0000*/  BRA `(.L_x_7) ;\n"); err == nil {
		t.Error("a branch to an unknown label parsed")
	}
}

// Nested loops: the innermost one with math wins over the outer one that contains it.
func TestMainLoopInnermost(t *testing.T) {
	f := Function{Name: "nest", Insts: []Inst{
		{Addr: 0x00, Op: "MOV", Target: -1},
		{Addr: 0x10, Op: "FFMA", Target: -1},
		{Addr: 0x20, Op: "FFMA", Target: -1},
		{Addr: 0x30, Op: "BRA", Pred: "@P0", Target: 0x10},
		{Addr: 0x40, Op: "IADD3", Target: -1},
		{Addr: 0x50, Op: "BRA", Pred: "@P1", Target: 0x00},
		{Addr: 0x60, Op: "EXIT", Target: -1},
	}}
	l, body, ok := f.MainLoop()
	if !ok || l != (Loop{0x10, 0x30}) || len(body) != 3 {
		t.Errorf("main loop %v of %d, want the inner 0x10–0x30 of 3", l, len(body))
	}
}
