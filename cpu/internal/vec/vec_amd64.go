//go:build amd64 && !purego

package vec

// The scalar exp32 loop of package cpu costs ~5 ns per element on one core; the U-Net
// evaluates ~190 M SiLU (forward and backward) per celeba32 step at batch 64, which made
// SiLU 17% of the step. These kernels evaluate exp32's polynomial on 16 lanes
// (vec_amd64.s) when the CPU and the OS support AVX-512F.

//go:noescape
func cpuid(leaf, sub uint32) (eax, ebx, ecx, edx uint32)

//go:noescape
func xgetbv0() (eax uint32)

//go:noescape
func siluAVX512(x, y *float32, n int)

//go:noescape
func siluBwdAVX512(x, dy, dx *float32, n int)

//go:noescape
func addAVX512(dst, src *float32, n int)

// hasAVX512 reports whether the CPU has AVX-512F and the OS saves the ZMM state
// (XCR0 bits 1, 2 and 5–7).
func hasAVX512() bool {
	max, _, _, _ := cpuid(0, 0)
	if max < 7 {
		return false
	}
	_, _, c1, _ := cpuid(1, 0)
	if c1&(1<<27) == 0 { // OSXSAVE
		return false
	}
	if xgetbv0()&0xe6 != 0xe6 {
		return false
	}
	_, b7, _, _ := cpuid(7, 0)
	return b7&(1<<16) != 0
}

// Available reports whether the kernels run on this machine.
var Available = hasAVX512()

// SiLU: y[i] = x[i]/(1+exp(−x[i])) for len(x) elements (y at least as long), every
// element through the 16-lane kernel (a tail shorter than 16 goes through a
// zero-padded block), so that a result never depends on where a parallel range
// starts. It panics when !Available.
func SiLU(x, y []float32) {
	if !Available {
		panic("vec.SiLU: no AVX-512")
	}
	n := len(x) &^ 15
	y = y[:len(x)]
	if n > 0 {
		siluAVX512(&x[0], &y[0], n)
	}
	if t := len(x) - n; t > 0 {
		var bx, by [16]float32
		copy(bx[:], x[n:])
		siluAVX512(&bx[0], &by[0], 16)
		copy(y[n:], by[:t])
	}
}

// SiLUBackward: dx[i] += dy[i]·s·(1 + x[i]·(1−s)) with s = 1/(1+exp(−x[i])), as SiLU.
func SiLUBackward(x, dy, dx []float32) {
	if !Available {
		panic("vec.SiLUBackward: no AVX-512")
	}
	n := len(x) &^ 15
	dy, dx = dy[:len(x)], dx[:len(x)]
	if n > 0 {
		siluBwdAVX512(&x[0], &dy[0], &dx[0], n)
	}
	if t := len(x) - n; t > 0 {
		var bx, bdy, bdx [16]float32
		copy(bx[:], x[n:])
		copy(bdy[:], dy[n:])
		copy(bdx[:], dx[n:])
		siluBwdAVX512(&bx[0], &bdy[0], &bdx[0], 16)
		copy(dx[n:], bdx[:t])
	}
}

// Add: dst[i] += src[i] for i < len(dst) (src at least as long). Each sum is one IEEE
// addition, the same in a vector lane as in scalar code. It panics when !Available.
func Add(dst, src []float32) {
	if !Available {
		panic("vec.Add: no AVX-512")
	}
	src = src[:len(dst)]
	n := len(dst) &^ 63
	if n > 0 {
		addAVX512(&dst[0], &src[0], n)
	}
	for i := n; i < len(dst); i++ {
		dst[i] += src[i]
	}
}

// BF16 reports the CPU's bfloat16 dot-product instructions that the OS lets programs use: AVX512-BF16 (CPUID.7.1
// EAX bit 5, with the ZMM state saved) and AMX-BF16 (CPUID.7.0 EDX bits 22 (AMX-BF16) and 24 (AMX-TILE), with the
// tile state enabled in XCR0, bits 17 and 18). Package cpu's bf16 precision needs one of them.
func BF16() (avx512bf16, amxbf16 bool) {
	max, _, _, _ := cpuid(0, 0)
	if max < 7 {
		return false, false
	}
	_, _, c1, _ := cpuid(1, 0)
	if c1&(1<<27) == 0 { // OSXSAVE
		return false, false
	}
	xcr0 := xgetbv0()
	sub, _, _, d7 := cpuid(7, 0)
	if sub >= 1 && hasAVX512() {
		a71, _, _, _ := cpuid(7, 1)
		avx512bf16 = a71&(1<<5) != 0
	}
	amxbf16 = d7&(1<<22) != 0 && d7&(1<<24) != 0 && xcr0&(3<<17) == 3<<17
	return avx512bf16, amxbf16
}
