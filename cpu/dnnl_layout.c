// The two layout changes around oneDNN's AMX / AVX512-BF16 convolutions, done here instead of by oneDNN's generic
// reorder (see dnnl_layout.h): at bf16 those primitives read NHWC bf16 and write NHWC f32, and the backend's buffers
// are NCHW f32, so every convolution converts its inputs in and its output back. oneDNN's jit:uni reorder did that at
// ~1 G elements/s on two cores (a quarter of the celeba32 bf16 step on an AMX CPU); these run the same
// transformation as 16×16 register transposes.
//
// Results are oneDNN's bit for bit: the same conversion instruction (VCVTNEPS2BF16: round to nearest even, as
// oneDNN's reorder uses on these CPUs) and the same single IEEE addition of the sum post-op (dst + src), so the
// training numbers do not change (TestLayoutMatchesOneDNN compares both on every element, with guard bands).

#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <omp.h>

#include "dnnl_layout.h"

#define TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

int ddpm_layout_available(void) {
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
	       __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
}

// tr16 transposes the 16×16 matrix whose rows are r[0..15], in place: for b = 1, 2, 4, 8 it swaps the off-diagonal
// b×b blocks of every 2b×2b block (rows i and i+b, i & b == 0: row i takes row i+b's elements j−b where j & b, row
// i+b takes row i's elements j+b where not); swapping at every scale is the transpose.
TGT static inline void tr16(__m512 r[16]) {
	static const int lo[4][16] = {
		{0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30},
		{0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29},
		{0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27},
		{0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23},
	};
	static const int hi[4][16] = {
		{1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31},
		{2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31},
		{4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31},
		{8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31},
	};
	for (int s = 0; s < 4; s++) {
		const int b = 1 << s;
		const __m512i il = _mm512_loadu_si512(lo[s]), ih = _mm512_loadu_si512(hi[s]);
		for (int i = 0; i < 16; i++) {
			if (i & b) continue;
			const __m512 a = r[i], c = r[i + b];
			r[i] = _mm512_permutex2var_ps(a, il, c);
			r[i + b] = _mm512_permutex2var_ps(a, ih, c);
		}
	}
}

// bf16 of one float by the vector instruction, for the edges.
TGT static inline uint16_t bf16of(float v) {
	__m256bh h = _mm512_cvtneps_pbh(_mm512_set1_ps(v));
	return (uint16_t)_mm256_extract_epi16((__m256i)h, 0);
}

// stream: the layout changes may use streaming stores (ddpm_layout_stream; on unless DDPM_LAYOUT_STREAM=0, for
// comparisons). Read by the entry points, before their parallel regions (nt below).
static int stream = -1;

void ddpm_layout_stream(int on) { stream = on; }

static int streams(void) {
	if (stream < 0) {
		const char *e = getenv("DDPM_LAYOUT_STREAM");
		stream = !(e && e[0] == '0' && e[1] == 0);
	}
	return stream;
}

// aligned64: the address is a multiple of a cache line, as the streaming stores below need.
static inline int aligned64(const void *p) { return ((uintptr_t)p & 63) == 0; }

// Streaming stores (MOVNTDQ/MOVNTPS) write whole cache lines without reading them first: these layout changes run at
// the machine's memory bandwidth (their tensors, tens of MiB, are cold), and an ordinary store's read-for-ownership
// is a third of the traffic. Measured on cold 32 MiB tensors (2 threads, the step's shapes): NCHW → NHWC bf16
// 6.1 → 8.7 GB/s of source, NHWC → NCHW 3.4 → 5.3 (docs/perf.md). They need whole, aligned lines of output; the
// shapes that lack them take the ordinary stores. The fence orders them before the caller's next reads.

// One sample: src [c][hw] f32 → dst [hw][c] bf16. Channel tiles outside, pixel tiles inside: the 16 source rows
// of a tile stream through memory in order (4 KiB apart at 32×32: a tile's lines fall into one cache set, so the
// order that revisits them matters). Where c is a multiple of 32 and dst is line-aligned, two channel tiles at a
// time, so that each pixel's 32 outputs are one whole line, streamed.
TGT static void toNHWCSample(const float *src, uint16_t *dst, int c, int hw, int nt) {
	const int c16 = c & ~15, p16 = hw & ~15;
	__m512 r[16], q[16];
	if (nt && c % 32 == 0 && aligned64(dst)) {
		for (int c0 = 0; c0 < c; c0 += 32)
			for (int p0 = 0; p0 < p16; p0 += 16) {
				for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(src + (long)(c0 + i) * hw + p0);
				for (int i = 0; i < 16; i++) q[i] = _mm512_loadu_ps(src + (long)(c0 + 16 + i) * hw + p0);
				tr16(r);
				tr16(q);
				for (int j = 0; j < 16; j++) {
					const __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512((__m256i)_mm512_cvtneps_pbh(r[j])),
						(__m256i)_mm512_cvtneps_pbh(q[j]), 1);
					_mm512_stream_si512((__m512i *)(dst + (long)(p0 + j) * c + c0), v);
				}
			}
		_mm_sfence();
	} else {
		for (int c0 = 0; c0 < c16; c0 += 16)
			for (int p0 = 0; p0 < p16; p0 += 16) {
				for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(src + (long)(c0 + i) * hw + p0);
				tr16(r);
				for (int j = 0; j < 16; j++)
					_mm256_storeu_si256((__m256i *)(dst + (long)(p0 + j) * c + c0), (__m256i)_mm512_cvtneps_pbh(r[j]));
			}
	}
	for (int p = 0; p < hw; p++)
		for (int ch = p < p16 ? c16 : 0; ch < c; ch++) dst[(long)p * c + ch] = bf16of(src[(long)ch * hw + p]);
}

// One sample: src [hw][c] f32 → dst [c][hw] f32, written (acc 0) or added to (acc 1: dst + src). Where dst is
// written and its rows are whole, aligned lines (hw a multiple of 16), pixel tiles outside and streamed: the source
// is then read in order, 16 pixels' channels at a time, and each store is a whole line. Otherwise (and to add) in
// the order of toNHWCSample, for the same reason (here the destination rows are 4 KiB apart).
TGT static void toNCHWSample(const float *src, float *dst, int c, int hw, int acc, int nt) {
	const int c16 = c & ~15, p16 = hw & ~15;
	__m512 r[16];
	if (nt && !acc && p16 == hw && aligned64(dst)) {
		for (int p0 = 0; p0 < hw; p0 += 16)
			for (int c0 = 0; c0 < c16; c0 += 16) {
				for (int j = 0; j < 16; j++) r[j] = _mm512_loadu_ps(src + (long)(p0 + j) * c + c0);
				tr16(r);
				for (int i = 0; i < 16; i++) _mm512_stream_ps(dst + (long)(c0 + i) * hw + p0, r[i]);
			}
		_mm_sfence();
	} else {
		for (int c0 = 0; c0 < c16; c0 += 16)
			for (int p0 = 0; p0 < p16; p0 += 16) {
				for (int j = 0; j < 16; j++) r[j] = _mm512_loadu_ps(src + (long)(p0 + j) * c + c0);
				tr16(r);
				for (int i = 0; i < 16; i++) {
					float *d = dst + (long)(c0 + i) * hw + p0;
					_mm512_storeu_ps(d, acc ? _mm512_add_ps(_mm512_loadu_ps(d), r[i]) : r[i]);
				}
			}
	}
	for (int p = 0; p < hw; p++)
		for (int ch = p < p16 ? c16 : 0; ch < c; ch++) {
			float *d = dst + (long)ch * hw + p;
			*d = acc ? *d + src[(long)p * c + ch] : src[(long)p * c + ch];
		}
}

// sum64 is Σ x[i] in float64 in the order of vec.Sum64 (cpu/internal/vec): element i to partial i mod 32, each
// partial adding in increasing i from +0, the partials combined as its combine32 does; the same number.
TGT static double sum64(const float *x, int n) {
	__m512d a0 = _mm512_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
	int i = 0;
	for (; i + 32 <= n; i += 32) {
		a0 = _mm512_add_pd(a0, _mm512_cvtps_pd(_mm256_loadu_ps(x + i)));
		a1 = _mm512_add_pd(a1, _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 8)));
		a2 = _mm512_add_pd(a2, _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 16)));
		a3 = _mm512_add_pd(a3, _mm512_cvtps_pd(_mm256_loadu_ps(x + i + 24)));
	}
	double p[32], q[8];
	_mm512_storeu_pd(p, a0);
	_mm512_storeu_pd(p + 8, a1);
	_mm512_storeu_pd(p + 16, a2);
	_mm512_storeu_pd(p + 24, a3);
	for (int j = 0; i < n; i++, j++) p[j] += (double)x[i];
	for (int l = 0; l < 8; l++) q[l] = (p[l] + p[8 + l]) + (p[16 + l] + p[24 + l]);
	return ((q[0] + q[4]) + (q[2] + q[6])) + ((q[1] + q[5]) + (q[3] + q[7]));
}

// The samples are split over the OpenMP threads (the number set by the caller); each element is written once, by
// one thread, so the result does not depend on the split. sums (NULL: none): sums[i·c + ch] = sample i's channel ch
// summed by sum64, read while the sample is still in the cache (the bias gradient of a convolution whose dy this is:
// a second pass over dy from memory otherwise).
void ddpm_nchw_to_nhwc_bf16(const float *src, uint16_t *dst, int n, int c, int hw, double *sums) {
	const long sz = (long)c * hw;
	const int nt = streams();
#pragma omp parallel for schedule(static)
	for (int i = 0; i < n; i++) {
		toNHWCSample(src + i * sz, dst + i * sz, c, hw, nt);
		if (sums)
			for (int ch = 0; ch < c; ch++) sums[(long)i * c + ch] = sum64(src + i * sz + (long)ch * hw, hw);
	}
}

void ddpm_nhwc_to_nchw_f32(const float *src, float *dst, int n, int c, int hw, int acc) {
	const long sz = (long)c * hw;
	const int nt = streams();
#pragma omp parallel for schedule(static)
	for (int i = 0; i < n; i++) toNCHWSample(src + i * sz, dst + i * sz, c, hw, acc, nt);
}
