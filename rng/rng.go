package rng

import (
	"fmt"
	"runtime"
	"sync"
)

// Streams of the project. Each use of randomness owns one stream, so that e.g. drawing more timesteps never shifts
// the noise. kernels/philox.cuh defines the same numbers as PHILOX_STREAM_*. Append new streams; never renumber.
const (
	StreamInit     uint32 = 1 // weight initialisation
	StreamTimestep uint32 = 2 // training timesteps t ~ U{0..T-1}
	StreamNoise    uint32 = 3 // training noise eps ~ N(0, I)
	StreamSampler  uint32 = 4 // sampler noise: x_T and the z of each reverse step
	StreamShuffle  uint32 = 5 // data-set order (Perm)
	StreamFlip     uint32 = 6 // random horizontal flips
	StreamDropout  uint32 = 7 // dropout masks
	StreamNLL      uint32 = 8 // likelihood evaluation (package nll): the bound's timesteps and the noise of its x_t
)

// Uint32 returns draw i of (seed, stream): word i%4 of Block(seed, stream, i/4).
func Uint32(seed uint64, stream uint32, i uint64) uint32 {
	return Block(seed, stream, i>>2)[i&3]
}

// Uniform returns draw i of (seed, stream) as a float32 in (0, 1): UniformFromBits(Uint32(seed, stream, i)).
func Uniform(seed uint64, stream uint32, i uint64) float32 {
	return UniformFromBits(Uint32(seed, stream, i))
}

// Normal returns draw i of (seed, stream) as a standard normal float32. With w = Block(seed, stream, i/4) and
// (z0, z1, z2, z3) = (BoxMuller(w[0], w[1]), BoxMuller(w[2], w[3])), it is z_(i%4): lanes 0 and 1 are the cosine
// and sine normals of the first pair, lanes 2 and 3 of the second.
func Normal(seed uint64, stream uint32, i uint64) float32 {
	w := Block(seed, stream, i>>2)
	lane := i & 3
	z0, z1 := BoxMuller(w[lane&2], w[lane|1])
	if lane&1 == 0 {
		return z0
	}
	return z1
}

// Intn returns draw i of (seed, stream) as an integer in [0, n), by the multiply-shift map
//
//	(uint64(Uint32(seed, stream, i)) * n) >> 32.
//
// Each value is taken by floor(2^32/n) or ceil(2^32/n) of the 2^32 words, so its probability is off from 1/n by at
// most a factor (1 +- n/2^32): for n = 1000 timesteps, 2.3e-7, far below anything a training run can see. It needs
// one draw per call (no rejection loop), which keeps the draw index of every element fixed. It panics unless
// 1 <= n <= 2^32.
func Intn(seed uint64, stream uint32, i uint64, n int) int {
	checkN("Intn", n)
	return intnFromBits(Uint32(seed, stream, i), n)
}

func intnFromBits(u uint32, n int) int {
	return int((uint64(u) * uint64(n)) >> 32)
}

func checkN(op string, n int) {
	if n < 1 || uint64(n) > 1<<32 {
		panic(fmt.Sprintf("rng.%s: n = %d, want 1 <= n <= 2^32", op, n))
	}
}

// Perm returns a pseudo-random permutation of [0, n) by the Fisher-Yates shuffle: starting from the identity, for
// j = n-1 down to 1, swap p[j] with p[Intn(seed, stream, offset + (n-1-j), j+1)]. It reads draws offset ..
// offset+n-2 of the stream, so consecutive epochs take disjoint index ranges with offset = epoch*(n-1) (or any
// larger stride).
func Perm(seed uint64, stream uint32, offset uint64, n int) []int {
	if n < 0 {
		panic(fmt.Sprintf("rng.Perm: n = %d < 0", n))
	}
	p := make([]int, n)
	for j := range p {
		p[j] = j
	}
	for j := n - 1; j >= 1; j-- {
		k := Intn(seed, stream, offset+uint64(n-1-j), j+1)
		p[j], p[k] = p[k], p[j]
	}
	return p
}

// FillUint32 sets dst[j] = Uint32(seed, stream, offset+j).
func FillUint32(dst []uint32, seed uint64, stream uint32, offset uint64) {
	fill(dst, seed, stream, offset, func(w [4]uint32) [4]uint32 { return w })
}

// FillUniform sets dst[j] = Uniform(seed, stream, offset+j).
func FillUniform(dst []float32, seed uint64, stream uint32, offset uint64) {
	fill(dst, seed, stream, offset, func(w [4]uint32) [4]float32 {
		return [4]float32{UniformFromBits(w[0]), UniformFromBits(w[1]), UniformFromBits(w[2]), UniformFromBits(w[3])}
	})
}

// FillNormal sets dst[j] = Normal(seed, stream, offset+j), bit for bit, computing each Philox block and each
// Box-Muller pair once for the four draws that share it.
func FillNormal(dst []float32, seed uint64, stream uint32, offset uint64) {
	fill(dst, seed, stream, offset, normals4)
}

// FillIntn sets dst[j] = Intn(seed, stream, offset+j, n); e.g. a batch of timesteps t ~ U{0..T-1}. It panics
// unless 1 <= n <= 2^32.
func FillIntn(dst []int, seed uint64, stream uint32, offset uint64, n int) {
	checkN("FillIntn", n)
	fill(dst, seed, stream, offset, func(w [4]uint32) [4]int {
		return [4]int{intnFromBits(w[0], n), intnFromBits(w[1], n), intnFromBits(w[2], n), intnFromBits(w[3], n)}
	})
}

// parallelMin is the length from which the fillers split the work over goroutines. On this project's 2-core Xeon
// a block costs ~40 ns in Philox and ~80 ns more for its four normals, so below ~64k elements (~2 ms) splitting
// gains little.
const parallelMin = 1 << 16

// fill writes dst[j] = conv(Block(seed, stream, (offset+j)/4))[(offset+j)%4]. Every element is a pure function of
// its index, so splitting dst into chunks (at 4-aligned indices) and filling them concurrently gives the same bits.
func fill[T any](dst []T, seed uint64, stream uint32, offset uint64, conv func([4]uint32) [4]T) {
	workers := runtime.GOMAXPROCS(0)
	if len(dst) < parallelMin || workers < 2 {
		fillSerial(dst, seed, stream, offset, conv)
		return
	}
	chunk := (len(dst)/workers + 3) &^ 3
	var wg sync.WaitGroup
	for start := 0; start < len(dst); start += chunk {
		end := min(start+chunk, len(dst))
		wg.Add(1)
		go func() {
			defer wg.Done()
			fillSerial(dst[start:end], seed, stream, offset+uint64(start), conv)
		}()
	}
	wg.Wait()
}

func fillSerial[T any](dst []T, seed uint64, stream uint32, offset uint64, conv func([4]uint32) [4]T) {
	key := [2]uint32{uint32(seed), uint32(seed >> 32)}
	j := 0
	for j < len(dst) {
		i := offset + uint64(j)
		block, lane := i>>2, int(i&3)
		v := conv(Philox4x32([4]uint32{uint32(block), uint32(block >> 32), stream, 0}, key))
		n := copy(dst[j:], v[lane:])
		j += n
	}
}
