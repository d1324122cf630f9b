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

// The group-norm kernels below accumulate float64 sums of float32 data in 32 partials:
// four registers of 8 float64 lanes, partial k (register k/8, lane k%8) taking the
// elements i ≡ k (mod 32) of a block of n elements, n a multiple of 32, added in
// increasing i onto the partials already in p (see Sum64 for the combination).

// func sum64AVX512(x *float32, n int, p *[32]float64): p[k] += x[i] for i ≡ k (mod 32).
TEXT ·sum64AVX512(SB), NOSPLIT, $0-24
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	MOVQ p+16(FP), DI
	VMOVUPD (DI), Z0
	VMOVUPD 64(DI), Z1
	VMOVUPD 128(DI), Z2
	VMOVUPD 192(DI), Z3
sumloop:
	CMPQ CX, $32
	JLT sumdone
	VCVTPS2PD (SI), Z4
	VCVTPS2PD 32(SI), Z5
	VCVTPS2PD 64(SI), Z6
	VCVTPS2PD 96(SI), Z7
	VADDPD Z4, Z0, Z0
	VADDPD Z5, Z1, Z1
	VADDPD Z6, Z2, Z2
	VADDPD Z7, Z3, Z3
	ADDQ $128, SI
	SUBQ $32, CX
	JMP sumloop
sumdone:
	VMOVUPD Z0, (DI)
	VMOVUPD Z1, 64(DI)
	VMOVUPD Z2, 128(DI)
	VMOVUPD Z3, 192(DI)
	VZEROUPPER
	RET

// func sumSqDev64AVX512(x *float32, n int, mu float64, p *[32]float64, w *float32):
// p[k] = fma(d, d, p[k]) with d = x[i] − mu (float64), for i ≡ k (mod 32); meanwhile
// PREFETCHT0 of w's 4n bytes.
TEXT ·sumSqDev64AVX512(SB), NOSPLIT, $0-40
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VBROADCASTSD mu+16(FP), Z8
	MOVQ p+24(FP), DI
	MOVQ w+32(FP), R9
	VMOVUPD (DI), Z0
	VMOVUPD 64(DI), Z1
	VMOVUPD 128(DI), Z2
	VMOVUPD 192(DI), Z3
sqloop:
	CMPQ CX, $32
	JLT sqdone
	PREFETCHT0 (R9)
	PREFETCHT0 64(R9)
	ADDQ $128, R9
	VCVTPS2PD (SI), Z4
	VCVTPS2PD 32(SI), Z5
	VCVTPS2PD 64(SI), Z6
	VCVTPS2PD 96(SI), Z7
	VSUBPD Z8, Z4, Z4
	VSUBPD Z8, Z5, Z5
	VSUBPD Z8, Z6, Z6
	VSUBPD Z8, Z7, Z7
	VFMADD231PD Z4, Z4, Z0
	VFMADD231PD Z5, Z5, Z1
	VFMADD231PD Z6, Z6, Z2
	VFMADD231PD Z7, Z7, Z3
	ADDQ $128, SI
	SUBQ $32, CX
	JMP sqloop
sqdone:
	VMOVUPD Z0, (DI)
	VMOVUPD Z1, 64(DI)
	VMOVUPD Z2, 128(DI)
	VMOVUPD Z3, 192(DI)
	VZEROUPPER
	RET

// DYX8(off, a, b): for the 8 elements at byte offset off of dy (BX) and x (SI),
// a += dy and b = fma(dy, (x − mu)·rstd, b) in float64 (mu in Z16, rstd in Z17).
#define DYX8(off, a, b) \
	VCVTPS2PD off(BX), Z18 \
	VCVTPS2PD off(SI), Z19 \
	VSUBPD Z16, Z19, Z19 \
	VMULPD Z17, Z19, Z19 \
	VADDPD Z18, a, a \
	VFMADD231PD Z19, Z18, b

// func sumDyDyXhatAVX512(dy, x *float32, n int, mu, rstd float64, p *[64]float64, w *float32):
// for i ≡ k (mod 32), p[k] += dy[i] and p[32+k] = fma(dy[i], (x[i] − mu)·rstd, p[32+k]);
// meanwhile PREFETCHT0 of w's 4n bytes.
TEXT ·sumDyDyXhatAVX512(SB), NOSPLIT, $0-56
	MOVQ dy+0(FP), BX
	MOVQ x+8(FP), SI
	MOVQ n+16(FP), CX
	VBROADCASTSD mu+24(FP), Z16
	VBROADCASTSD rstd+32(FP), Z17
	MOVQ p+40(FP), DI
	MOVQ w+48(FP), R9
	VMOVUPD (DI), Z0
	VMOVUPD 64(DI), Z1
	VMOVUPD 128(DI), Z2
	VMOVUPD 192(DI), Z3
	VMOVUPD 256(DI), Z4
	VMOVUPD 320(DI), Z5
	VMOVUPD 384(DI), Z6
	VMOVUPD 448(DI), Z7
dyxloop:
	CMPQ CX, $32
	JLT dyxdone
	PREFETCHT0 (R9)
	PREFETCHT0 64(R9)
	ADDQ $128, R9
	DYX8(0, Z0, Z4)
	DYX8(32, Z1, Z5)
	DYX8(64, Z2, Z6)
	DYX8(96, Z3, Z7)
	ADDQ $128, BX
	ADDQ $128, SI
	SUBQ $32, CX
	JMP dyxloop
dyxdone:
	VMOVUPD Z0, (DI)
	VMOVUPD Z1, 64(DI)
	VMOVUPD Z2, 128(DI)
	VMOVUPD Z3, 192(DI)
	VMOVUPD Z4, 256(DI)
	VMOVUPD Z5, 320(DI)
	VMOVUPD Z6, 384(DI)
	VMOVUPD Z7, 448(DI)
	VZEROUPPER
	RET

// func affineAVX512(x, y *float32, n int, m, a, b float32, pf *float32): y[i] = ((x[i] − m)·a) + b,
// three rounded float32 operations (no FMA), n a multiple of 16; meanwhile PREFETCHT1
// of pf's 4·(n &^ 31) bytes.
TEXT ·affineAVX512(SB), NOSPLIT, $0-48
	MOVQ x+0(FP), SI
	MOVQ y+8(FP), DI
	MOVQ n+16(FP), CX
	VBROADCASTSS m+24(FP), Z1
	VBROADCASTSS a+28(FP), Z2
	VBROADCASTSS b+32(FP), Z3
	MOVQ pf+40(FP), R9
affloop:
	CMPQ CX, $32
	JLT afftail
	PREFETCHT1 (R9)
	PREFETCHT1 64(R9)
	ADDQ $128, R9
	VMOVUPS (SI), Z4
	VMOVUPS 64(SI), Z5
	VSUBPS Z1, Z4, Z4
	VSUBPS Z1, Z5, Z5
	VMULPS Z2, Z4, Z4
	VMULPS Z2, Z5, Z5
	VADDPS Z3, Z4, Z4
	VADDPS Z3, Z5, Z5
	VMOVUPS Z4, (DI)
	VMOVUPS Z5, 64(DI)
	ADDQ $128, SI
	ADDQ $128, DI
	SUBQ $32, CX
	JMP affloop
afftail:
	CMPQ CX, $16
	JLT affdone
	VMOVUPS (SI), Z4
	VSUBPS Z1, Z4, Z4
	VMULPS Z2, Z4, Z4
	VADDPS Z3, Z4, Z4
	VMOVUPS Z4, (DI)
affdone:
	VZEROUPPER
	RET

// DXV(off): for the 8 elements at byte offset off of dy (BX) and x (SI), in float64:
// xh = (x − mu)·rstd, t = rstd·(((dy·gc) − m1) − xh·m2), into Y6 as float32 (mu, rstd,
// gc, m1, m2 in Z16–Z20; no FMA).
#define DXV(off) \
	VCVTPS2PD off(SI), Z4 \
	VCVTPS2PD off(BX), Z5 \
	VSUBPD Z16, Z4, Z4 \
	VMULPD Z17, Z4, Z4 \
	VMULPD Z18, Z5, Z5 \
	VSUBPD Z19, Z5, Z5 \
	VMULPD Z20, Z4, Z4 \
	VSUBPD Z4, Z5, Z5 \
	VMULPD Z17, Z5, Z5 \
	VCVTPD2PS Z5, Y6

// DX8(off): dx += DXV(off) at byte offset off of dx (DI).
#define DX8(off) \
	DXV(off) \
	VADDPS off(DI), Y6, Y6 \
	VMOVUPS Y6, off(DI)

// DX8SET(off): dx = DXV(off), for a dx that was all zeros (0 + v = v; fills.go of package cpu).
#define DX8SET(off) \
	DXV(off) \
	VMOVUPS Y6, off(DI)

// func gnDxAVX512(dy, x, dx *float32, n int, mu, rstd, gc, m1, m2 float64, pf1, pf2 *float32, set bool):
// DX8 (DX8SET where set) over n elements, n a multiple of 16; meanwhile PREFETCHT1 of pf1's
// and pf2's 4n bytes.
TEXT ·gnDxAVX512(SB), NOSPLIT, $0-89
	MOVQ dy+0(FP), BX
	MOVQ x+8(FP), SI
	MOVQ dx+16(FP), DI
	MOVQ n+24(FP), CX
	VBROADCASTSD mu+32(FP), Z16
	VBROADCASTSD rstd+40(FP), Z17
	VBROADCASTSD gc+48(FP), Z18
	VBROADCASTSD m1+56(FP), Z19
	VBROADCASTSD m2+64(FP), Z20
	MOVQ pf1+72(FP), R10
	MOVQ pf2+80(FP), R11
	MOVBLZX set+88(FP), R12
dxloop:
	CMPQ CX, $16
	JLT dxdone
	PREFETCHT1 (R10)
	PREFETCHT1 (R11)
	ADDQ $64, R10
	ADDQ $64, R11
	TESTQ R12, R12
	JNZ dxset
	DX8(0)
	DX8(32)
	JMP dxnext
dxset:
	DX8SET(0)
	DX8SET(32)
dxnext:
	ADDQ $64, BX
	ADDQ $64, SI
	ADDQ $64, DI
	SUBQ $16, CX
	JMP dxloop
dxdone:
	VZEROUPPER
	RET

// GNSG16(off, a0, a1, b0, b1): 16 elements of GroupNormSiLUGrad at byte offset off of
// x (SI), dy (BX) and gn (DI): n = ((x − m)·a) + b as affineAVX512 (m, a, b in
// Z29–Z31), gn = 0 + dy·s·(1 + n·(1−s)) as siluBwdAVX512 into zeros, then for the
// low and high 8 lanes a0/a1 += gn and b0/b1 = fma(gn, (x − mu)·rstd, b0/b1) in float64
// as DYX8 (mu, rstd broadcast from (R8) and 8(R8)).
#define GNSG16(off, a0, a1, b0, b1) \
	VMOVUPS off(SI), Z0 \
	VSUBPS Z29, Z0, Z0 \
	VMULPS Z30, Z0, Z0 \
	VADDPS Z31, Z0, Z0 \
	VPXORD Z16, Z0, Z1 \
	EXP16(Z1, Z2, Z3, Z4, Z5) \
	VADDPS Z28, Z2, Z2 \
	VDIVPS Z2, Z28, Z6 \
	VSUBPS Z6, Z28, Z7 \
	VMULPS Z7, Z0, Z7 \
	VADDPS Z28, Z7, Z7 \
	VMOVUPS off(BX), Z1 \
	VMULPS Z6, Z1, Z1 \
	VMULPS Z7, Z1, Z1 \
	VPXORD Z2, Z2, Z2 \
	VADDPS Z2, Z1, Z1 \
	VMOVUPS Z1, off(DI) \
	VCVTPS2PD Y1, Z2 \
	VEXTRACTF64X4 $1, Z1, Y3 \
	VCVTPS2PD Y3, Z3 \
	VCVTPS2PD off(SI), Z4 \
	VCVTPS2PD off+32(SI), Z5 \
	VSUBPD.BCST (R8), Z4, Z4 \
	VSUBPD.BCST (R8), Z5, Z5 \
	VMULPD.BCST 8(R8), Z4, Z4 \
	VMULPD.BCST 8(R8), Z5, Z5 \
	VADDPD Z2, a0, a0 \
	VADDPD Z3, a1, a1 \
	VFMADD231PD Z4, Z2, b0 \
	VFMADD231PD Z5, Z3, b1

// func gnSiLUGradAVX512(x, dy, gn *float32, n int, m, a, b float32, mu, rstd float64, p *[64]float64, w *float32):
// GNSG16 over n elements, n a multiple of 32, the sums in the 32 partials of p (Σ gn in
// p[0:32], Σ gn·x̂ in p[32:64]); meanwhile PREFETCHT0 of w's 4n bytes.
TEXT ·gnSiLUGradAVX512(SB), NOSPLIT, $0-80
	MOVQ x+0(FP), SI
	MOVQ dy+8(FP), BX
	MOVQ gn+16(FP), DI
	MOVQ n+24(FP), CX
	VBROADCASTSS m+32(FP), Z29
	VBROADCASTSS a+36(FP), Z30
	VBROADCASTSS b+40(FP), Z31
	MOVQ p+64(FP), DX
	LEAQ mu+48(FP), R8
	MOVQ w+72(FP), R9
	EXPCONST
	VMOVUPD (DX), Z8
	VMOVUPD 64(DX), Z9
	VMOVUPD 128(DX), Z10
	VMOVUPD 192(DX), Z11
	VMOVUPD 256(DX), Z12
	VMOVUPD 320(DX), Z13
	VMOVUPD 384(DX), Z14
	VMOVUPD 448(DX), Z15
gnsgloop:
	CMPQ CX, $32
	JLT gnsgdone
	PREFETCHT0 (R9)
	PREFETCHT0 64(R9)
	ADDQ $128, R9
	GNSG16(0, Z8, Z9, Z12, Z13)
	GNSG16(64, Z10, Z11, Z14, Z15)
	ADDQ $128, SI
	ADDQ $128, BX
	ADDQ $128, DI
	SUBQ $32, CX
	JMP gnsgloop
gnsgdone:
	VMOVUPD Z8, (DX)
	VMOVUPD Z9, 64(DX)
	VMOVUPD Z10, 128(DX)
	VMOVUPD Z11, 192(DX)
	VMOVUPD Z12, 256(DX)
	VMOVUPD Z13, 320(DX)
	VMOVUPD Z14, 384(DX)
	VMOVUPD Z15, 448(DX)
	VZEROUPPER
	RET

// func affineSiLUAVX512(x, y *float32, n int, m, a, b float32, pf *float32): v = ((x[i] − m)·a) + b
// as affineAVX512, then y[i] = v/(1+exp(−v)) as siluAVX512; n a multiple of 16; meanwhile
// PREFETCHT1 of pf's 4n bytes.
TEXT ·affineSiLUAVX512(SB), NOSPLIT, $0-48
	MOVQ x+0(FP), SI
	MOVQ y+8(FP), DI
	MOVQ n+16(FP), CX
	VBROADCASTSS m+24(FP), Z29
	VBROADCASTSS a+28(FP), Z30
	VBROADCASTSS b+32(FP), Z31
	MOVQ pf+40(FP), R9
	EXPCONST
asloop:
	CMPQ CX, $16
	JLT asdone
	PREFETCHT1 (R9)
	ADDQ $64, R9
	VMOVUPS (SI), Z0
	VSUBPS Z29, Z0, Z0
	VMULPS Z30, Z0, Z0
	VADDPS Z31, Z0, Z0
	VPXORD Z16, Z0, Z1
	EXP16(Z1, Z2, Z3, Z4, Z5)
	VADDPS Z28, Z2, Z2
	VDIVPS Z2, Z0, Z6
	VMOVUPS Z6, (DI)
	ADDQ $64, SI
	ADDQ $64, DI
	SUBQ $16, CX
	JMP asloop
asdone:
	VZEROUPPER
	RET

// Attention's kernels (softmax_amd64.go).

// func maxAVX512(x *float32, n int, m *[16]float32): m[l] = max(m[l], x[i]) for i ≡ l (mod 16), by VMAXPS (which
// does not keep a NaN: Softmax's exponentials do), n a multiple of 16.
TEXT ·maxAVX512(SB), NOSPLIT, $0-24
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	MOVQ m+16(FP), DI
	VMOVUPS (DI), Z0
maxloop:
	CMPQ CX, $16
	JLT maxdone
	VMAXPS (SI), Z0, Z0
	ADDQ $64, SI
	SUBQ $16, CX
	JMP maxloop
maxdone:
	VMOVUPS Z0, (DI)
	VZEROUPPER
	RET

// func expShiftAVX512(x *float32, n int, m float32): x[i] = exp(x[i] − m) by EXP16, in place, n a multiple of 16.
TEXT ·expShiftAVX512(SB), NOSPLIT, $0-20
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VBROADCASTSS m+16(FP), Z29
	EXPCONST
exploop:
	CMPQ CX, $16
	JLT expdone
	VMOVUPS (SI), Z0
	VSUBPS Z29, Z0, Z0
	EXP16(Z0, Z2, Z3, Z4, Z5)
	VMOVUPS Z2, (SI)
	ADDQ $64, SI
	SUBQ $16, CX
	JMP exploop
expdone:
	VZEROUPPER
	RET

// func dot64AVX512(x, y *float32, n int, p *[32]float64): p[k] = fma(x[i], y[i], p[k]) in float64 for i ≡ k
// (mod 32), n a multiple of 32.
TEXT ·dot64AVX512(SB), NOSPLIT, $0-32
	MOVQ x+0(FP), SI
	MOVQ y+8(FP), BX
	MOVQ n+16(FP), CX
	MOVQ p+24(FP), DI
	VMOVUPD (DI), Z0
	VMOVUPD 64(DI), Z1
	VMOVUPD 128(DI), Z2
	VMOVUPD 192(DI), Z3
dotloop:
	CMPQ CX, $32
	JLT dotdone
	VCVTPS2PD (SI), Z4
	VCVTPS2PD 32(SI), Z5
	VCVTPS2PD 64(SI), Z6
	VCVTPS2PD 96(SI), Z7
	VCVTPS2PD (BX), Z8
	VCVTPS2PD 32(BX), Z9
	VCVTPS2PD 64(BX), Z10
	VCVTPS2PD 96(BX), Z11
	VFMADD231PD Z8, Z4, Z0
	VFMADD231PD Z9, Z5, Z1
	VFMADD231PD Z10, Z6, Z2
	VFMADD231PD Z11, Z7, Z3
	ADDQ $128, SI
	ADDQ $128, BX
	SUBQ $32, CX
	JMP dotloop
dotdone:
	VMOVUPD Z0, (DI)
	VMOVUPD Z1, 64(DI)
	VMOVUPD Z2, 128(DI)
	VMOVUPD Z3, 192(DI)
	VZEROUPPER
	RET

// func softmaxGradAVX512(p, d *float32, n int, dot float64): d[i] = float32(float64(p[i])·(float64(d[i]) − dot)),
// each operation rounded (no FMA), n a multiple of 8.
TEXT ·softmaxGradAVX512(SB), NOSPLIT, $0-32
	MOVQ p+0(FP), SI
	MOVQ d+8(FP), DI
	MOVQ n+16(FP), CX
	VBROADCASTSD dot+24(FP), Z16
sgloop:
	CMPQ CX, $8
	JLT sgdone
	VCVTPS2PD (SI), Z0
	VCVTPS2PD (DI), Z1
	VSUBPD Z16, Z1, Z1
	VMULPD Z1, Z0, Z0
	VCVTPD2PS Z0, Y0
	VMOVUPS Y0, (DI)
	ADDQ $32, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JMP sgloop
sgdone:
	VZEROUPPER
	RET

// func roundBF16AVX512(x, y *float32, n int): y[i] = x[i] rounded to bfloat16 as package cpu's RoundBF16: the bits
// plus 0x7fff plus bit 16, the low 16 bits cleared; a NaN quieted (bit 22 set) instead. n a multiple of 16.
TEXT ·roundBF16AVX512(SB), NOSPLIT, $0-24
	MOVQ x+0(FP), SI
	MOVQ y+8(FP), DI
	MOVQ n+16(FP), CX
	MOVL $0x7fffffff, AX; VPBROADCASTD AX, Z16 // |·|
	MOVL $0x7f800000, AX; VPBROADCASTD AX, Z17 // Inf: larger magnitudes are NaN
	MOVL $0x00007fff, AX; VPBROADCASTD AX, Z18
	MOVL $0x00000001, AX; VPBROADCASTD AX, Z19
	MOVL $0xffff0000, AX; VPBROADCASTD AX, Z20
	MOVL $0x00400000, AX; VPBROADCASTD AX, Z21 // the quiet bit
rbloop:
	CMPQ CX, $16
	JLT rbdone
	VMOVDQU32 (SI), Z0
	VPANDD Z16, Z0, Z1
	VPCMPGTD Z17, Z1, K1 // K1: NaN lanes
	VPSRLD $16, Z0, Z2
	VPANDD Z19, Z2, Z2
	VPADDD Z18, Z2, Z2
	VPADDD Z2, Z0, Z3
	VPORD Z21, Z0, K1, Z3
	VPANDD Z20, Z3, Z3
	VMOVDQU32 Z3, (DI)
	ADDQ $64, SI
	ADDQ $64, DI
	SUBQ $16, CX
	JMP rbloop
rbdone:
	VZEROUPPER
	RET
