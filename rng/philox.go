// Package rng is the project's counter-based random number generator: Philox-4x32-10 (Salmon, Moraes, Dror and
// Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC 2011; the generator of Random123 and of curand's
// curand_init(Philox4_32_10)). Every draw is a pure function of (seed, stream, index), so the CPU backend, the CUDA
// kernels (kernels/philox.cuh, the same code in C++), a resumed run and a parity test all see the same numbers
// without sharing any state.
//
// # Counter mapping
//
// Draw i of (seed, stream) reads lane i%4 of Philox block i/4:
//
//	key     = [seed & 0xffffffff, seed >> 32]
//	counter = [block & 0xffffffff, block >> 32, stream, 0]      (block = i >> 2, lane = i & 3)
//	out     = Philox4x32(counter, key)                          4 x uint32
//
// Uint32, Uniform and Normal index the same sequence: Uint32(s, k, i) is out[lane], Uniform(s, k, i) is that word
// mapped to (0, 1), and Normal(s, k, i) is lane i%4 of the four Box-Muller normals made from out. So a caller that
// needs both uniforms and normals takes them from different streams (or disjoint index ranges). Each stream holds
// 2^64 draws; the fourth counter word is reserved (always 0).
//
// # Bit-exact float maths
//
// The float32 transforms use only integer operations and single IEEE-754 float32 additions, subtractions and
// multiplications (each rounded to nearest even, never fused into an FMA) plus one correctly rounded square root.
// Go's math.Log/Sin/Cos and CUDA's logf/sinf/cosf are not the same functions bit for bit, so this package carries its
// own logarithm and sine/cosine (Cephes' single-precision minimax polynomials). The CUDA header spells every
// operation with __fmul_rn/__fadd_rn/__fsqrt_rn so nvcc cannot contract them; the host C++ is compiled with
// -ffp-contract=off. In Go each product that feeds an addition is wrapped in an explicit float32 conversion, which the
// Go specification says prevents fusion. A test compiles the header with g++ and compares every bit.
package rng

import "math/bits"

// Philox-4x32 constants from Random123 (philox.h): the round multipliers and the Weyl key increments.
const (
	philoxM0 = 0xD2511F53
	philoxM1 = 0xCD9E8D57
	philoxW0 = 0x9E3779B9 // golden ratio
	philoxW1 = 0xBB67AE85 // sqrt(3) - 1
)

// Philox4x32 is Philox-4x32 with 10 rounds. One round is
//
//	(hi0, lo0) = mulhilo(M0, ctr[0]);  (hi1, lo1) = mulhilo(M1, ctr[2])
//	ctr = [hi1 ^ ctr[1] ^ key[0], lo1, hi0 ^ ctr[3] ^ key[1], lo0]
//
// where mulhilo is the 64-bit product split into its high and low 32-bit halves; the key is bumped by (W0, W1)
// between rounds (before rounds 2..10). It matches Random123's philox4x32_R(10, ctr, key).
func Philox4x32(ctr [4]uint32, key [2]uint32) [4]uint32 {
	return philox4x32R(10, ctr, key)
}

// philox4x32R is Philox-4x32 with a given number of rounds (Random123 publishes test vectors for 7 and 10).
func philox4x32R(rounds int, ctr [4]uint32, key [2]uint32) [4]uint32 {
	c0, c1, c2, c3 := ctr[0], ctr[1], ctr[2], ctr[3]
	k0, k1 := key[0], key[1]
	for r := 0; r < rounds; r++ {
		if r > 0 {
			k0 += philoxW0
			k1 += philoxW1
		}
		hi0, lo0 := bits.Mul32(philoxM0, c0)
		hi1, lo1 := bits.Mul32(philoxM1, c2)
		c0, c1, c2, c3 = hi1^c1^k0, lo1, hi0^c3^k1, lo0
	}
	return [4]uint32{c0, c1, c2, c3}
}

// Block returns Philox output block `block` of (seed, stream): the four words behind draws 4*block .. 4*block+3,
//
//	Philox4x32([block lo32, block hi32, stream, 0], [seed lo32, seed hi32]).
func Block(seed uint64, stream uint32, block uint64) [4]uint32 {
	return Philox4x32(
		[4]uint32{uint32(block), uint32(block >> 32), stream, 0},
		[2]uint32{uint32(seed), uint32(seed >> 32)},
	)
}
