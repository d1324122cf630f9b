//go:build amd64 && !purego

#include "textflag.h"

// func cpuid(leaf, sub uint32) (eax, ebx, ecx, edx uint32)
TEXT ·cpuid(SB), NOSPLIT, $0-24
	MOVL leaf+0(FP), AX
	MOVL sub+4(FP), CX
	CPUID
	MOVL AX, eax+8(FP)
	MOVL BX, ebx+12(FP)
	MOVL CX, ecx+16(FP)
	MOVL DX, edx+20(FP)
	RET

// func xgetbv0() (eax uint32)
TEXT ·xgetbv0(SB), NOSPLIT, $0-4
	MOVL $0, CX
	XGETBV
	MOVL AX, eax+0(FP)
	RET

// EXPCONST loads the constants of EXP16 into Z16–Z29.
#define EXPCONST \
	MOVL $0x80000000, AX; VPBROADCASTD AX, Z16 \ // sign bit
	MOVL $0xc2c80000, AX; VPBROADCASTD AX, Z17 \ // −100
	MOVL $0x42c80000, AX; VPBROADCASTD AX, Z18 \ // 100
	MOVL $0x3fb8aa3b, AX; VPBROADCASTD AX, Z19 \ // log2 e
	MOVL $0x3f318000, AX; VPBROADCASTD AX, Z20 \ // ln2 high part
	MOVL $0xb95e8083, AX; VPBROADCASTD AX, Z21 \ // ln2 low part (negative)
	MOVL $0x39506967, AX; VPBROADCASTD AX, Z22 \ // polynomial, highest degree first
	MOVL $0x3ab743ce, AX; VPBROADCASTD AX, Z23 \
	MOVL $0x3c088908, AX; VPBROADCASTD AX, Z24 \
	MOVL $0x3d2aa9c1, AX; VPBROADCASTD AX, Z25 \
	MOVL $0x3e2aaaaa, AX; VPBROADCASTD AX, Z26 \
	MOVL $0x3f000000, AX; VPBROADCASTD AX, Z27 \
	MOVL $0x3f800000, AX; VPBROADCASTD AX, Z28    // 1

// EXP16(u, e, k, r, z): e = exp(u) for 16 lanes, clobbering k, r, z: u clamped to
// [−100, 100] (NaN kept), k = round(u·log2 e), r = u − k·ln2 (two parts), Cephes'
// degree-7 polynomial as exp32, then e = p·2^k by VSCALEFPS (overflow → +Inf,
// underflow → 0 or a subnormal).
#define EXP16(u, e, k, r, z) \
	VMAXPS u, Z17, u \
	VMINPS u, Z18, u \
	VMULPS Z19, u, k \
	VRNDSCALEPS $8, k, k \
	VMOVAPS u, r \
	VFNMADD231PS Z20, k, r \
	VFNMADD231PS Z21, k, r \
	VMULPS r, r, z \
	VMOVAPS Z22, e \
	VFMADD213PS Z23, r, e \
	VFMADD213PS Z24, r, e \
	VFMADD213PS Z25, r, e \
	VFMADD213PS Z26, r, e \
	VFMADD213PS Z27, r, e \
	VFMADD213PS r, z, e \
	VADDPS Z28, e, e \
	VSCALEFPS k, e, e

// func siluAVX512(x, y *float32, n int): y[i] = x[i]/(1+exp(−x[i])), n a multiple of 16.
TEXT ·siluAVX512(SB), NOSPLIT, $0-24
	MOVQ x+0(FP), SI
	MOVQ y+8(FP), DI
	MOVQ n+16(FP), CX
	EXPCONST
fwdloop:
	CMPQ CX, $16
	JLT fwddone
	VMOVUPS (SI), Z0
	VPXORD Z16, Z0, Z1
	EXP16(Z1, Z2, Z3, Z4, Z5)
	VADDPS Z28, Z2, Z2
	VDIVPS Z2, Z0, Z6
	VMOVUPS Z6, (DI)
	ADDQ $64, SI
	ADDQ $64, DI
	SUBQ $16, CX
	JMP fwdloop
fwddone:
	VZEROUPPER
	RET

// func siluBwdAVX512(x, dy, dx *float32, n int): with s = 1/(1+exp(−x)),
// dx[i] += dy[i]·s·(1 + x[i]·(1−s)), n a multiple of 16.
TEXT ·siluBwdAVX512(SB), NOSPLIT, $0-32
	MOVQ x+0(FP), SI
	MOVQ dy+8(FP), BX
	MOVQ dx+16(FP), DI
	MOVQ n+24(FP), CX
	EXPCONST
bwdloop:
	CMPQ CX, $16
	JLT bwddone
	VMOVUPS (SI), Z0
	VPXORD Z16, Z0, Z1
	EXP16(Z1, Z2, Z3, Z4, Z5)
	VADDPS Z28, Z2, Z2
	VDIVPS Z2, Z28, Z6  // s = 1/(1+e)
	VSUBPS Z6, Z28, Z7  // 1−s
	VMULPS Z7, Z0, Z7   // x·(1−s)
	VADDPS Z28, Z7, Z7  // 1 + x·(1−s)
	VMOVUPS (BX), Z8
	VMULPS Z6, Z8, Z8   // dy·s
	VMULPS Z7, Z8, Z8   // dy·s·(…)
	VADDPS (DI), Z8, Z8
	VMOVUPS Z8, (DI)
	ADDQ $64, SI
	ADDQ $64, BX
	ADDQ $64, DI
	SUBQ $16, CX
	JMP bwdloop
bwddone:
	VZEROUPPER
	RET

// func addAVX512(dst, src *float32, n int): dst[i] += src[i], n a multiple of 64.
TEXT ·addAVX512(SB), NOSPLIT, $0-24
	MOVQ dst+0(FP), DI
	MOVQ src+8(FP), SI
	MOVQ n+16(FP), CX
addloop:
	CMPQ CX, $64
	JLT adddone
	VMOVUPS (SI), Z0
	VMOVUPS 64(SI), Z1
	VMOVUPS 128(SI), Z2
	VMOVUPS 192(SI), Z3
	VADDPS (DI), Z0, Z0
	VADDPS 64(DI), Z1, Z1
	VADDPS 128(DI), Z2, Z2
	VADDPS 192(DI), Z3, Z3
	VMOVUPS Z0, (DI)
	VMOVUPS Z1, 64(DI)
	VMOVUPS Z2, 128(DI)
	VMOVUPS Z3, 192(DI)
	ADDQ $256, SI
	ADDQ $256, DI
	SUBQ $64, CX
	JMP addloop
adddone:
	VZEROUPPER
	RET
