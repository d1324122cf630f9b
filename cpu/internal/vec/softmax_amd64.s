//go:build amd64 && !purego

#include "textflag.h"

// The constants of EXP16 (vec_amd64.s), which this file restates: a macro of one .s file is not seen by another.
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

// EXP16 as in vec_amd64.s.
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
