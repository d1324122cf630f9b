// selftest.cu -- kernels that exercise the emulator itself (kernels/emu/emu.h). They are compiled only into the
// emulator (the PTX build takes kernels/*.cu, not this folder) and are run by cuda/emu_test.go; each documents what
// the test expects, so that the expectation is derived from CUDA semantics, not from running the emulator.
#include "../common.cuh"

// Barrier semantics: every thread writes its id to shared memory, synchronises, then reads its neighbour's slot
// (thread i reads (i+1) % n). Without a real barrier a thread would read the 0xFFFFFFFF left by the previous phase.
// Also reduces with __syncthreads_count/_and/_or: out_counts[block] = {count(tid odd), and(tid < n), or(tid == 0)}.
extern "C" __global__ void emu_test_barrier(int* out, int* out_counts) {
  __shared__ int slot[1024];
  const int n = blockDim.x * blockDim.y * blockDim.z;
  const int t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  slot[t] = -1;
  __syncthreads();
  slot[t] = t + 1000 * (int)blockIdx.x;
  __syncthreads();
  out[blockIdx.x * n + t] = slot[(t + 1) % n];
  int c = __syncthreads_count(t & 1);
  int a = __syncthreads_and(t < n);
  int o = __syncthreads_or(t == 0);
  if (t == 0) {
    out_counts[3 * blockIdx.x + 0] = c;
    out_counts[3 * blockIdx.x + 1] = a;
    out_counts[3 * blockIdx.x + 2] = o;
  }
}
EMU_REGISTER(emu_test_barrier)

// Dynamic shared memory: a block-wide tree sum of in[blockIdx.x*blockDim.x + i] into out[blockIdx.x]
// (blockDim.x a power of two). Blocks run concurrently on several OS threads, so each needs its own copy.
extern "C" __global__ void emu_test_dynsmem_sum(const float* in, float* out) {
  DYNAMIC_SHARED(float, buf);
  const int t = threadIdx.x;
  buf[t] = in[blockIdx.x * blockDim.x + t];
  __syncthreads();
  for (int s = blockDim.x / 2; s > 0; s >>= 1) {
    if (t < s) buf[t] += buf[t + s];
    __syncthreads();
  }
  if (t == 0) out[blockIdx.x] = buf[0];
}
EMU_REGISTER(emu_test_dynsmem_sum)

// Shuffles: for thread t with lane l (value v = in[t]), writes 8 results per thread:
//   out[8t+0] = __shfl_sync(v, (l*7+3) & 31)        out[8t+1] = __shfl_up_sync(v, 3)
//   out[8t+2] = __shfl_down_sync(v, 5)              out[8t+3] = __shfl_xor_sync(v, 6)
//   out[8t+4] = __shfl_down_sync(v, 2, width 8)     out[8t+5] = ballot(v > 0) as bits
//   out[8t+6] = any(v > 100)                        out[8t+7] = all(v > -1000)
extern "C" __global__ void emu_test_shuffle(const int* in, int* out) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  const int l = threadIdx.x & 31;
  const int v = in[t];
  const unsigned full = 0xffffffffu;
  out[8 * t + 0] = __shfl_sync(full, v, (l * 7 + 3) & 31);
  out[8 * t + 1] = __shfl_up_sync(full, v, 3);
  out[8 * t + 2] = __shfl_down_sync(full, v, 5);
  out[8 * t + 3] = __shfl_xor_sync(full, v, 6);
  out[8 * t + 4] = __shfl_down_sync(full, v, 2, 8);
  out[8 * t + 5] = (int)__ballot_sync(full, v > 0);
  out[8 * t + 6] = __any_sync(full, v > 100);
  out[8 * t + 7] = __all_sync(full, v > -1000);
  __syncwarp();
}
EMU_REGISTER(emu_test_shuffle)

// Warp reduction of floats with __shfl_xor_sync (butterfly): every lane ends with the sum of its warp.
extern "C" __global__ void emu_test_warp_sum(const float* in, float* out) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  float v = in[t];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  out[t] = v;
}
EMU_REGISTER(emu_test_warp_sum)

// Atomics across blocks: every thread adds 1 to counter[0], in[t] to fsum[0], and max-es in[t]*1000 into imax[0].
extern "C" __global__ void emu_test_atomics(const float* in, int* counter, float* fsum, int* imax,
                                            unsigned long long* usum, long long n) {
  const long long t = global_index();
  if (t >= n) return;
  atomicAdd(counter, 1);
  atomicAdd(fsum, in[t]);
  atomicMax(imax, (int)(in[t] * 1000.0f));
  atomicAdd(usum, (unsigned long long)t);
}
EMU_REGISTER(emu_test_atomics)

// Deliberate bug: writes one element past the end of out (out has n elements).
extern "C" __global__ void emu_test_oob_write(float* out, int n) {
  const int t = global_index();
  if (t <= n) out[t] = 1.0f;  // BUG on purpose: should be t < n
}
EMU_REGISTER(emu_test_oob_write)

// Deliberate bug: the common early return before a barrier. Threads t >= n exit; the others wait forever on a GPU.
extern "C" __global__ void emu_test_barrier_exit(float* out, int n) {
  __shared__ float s[1024];
  const int t = threadIdx.x;
  if (t >= n) return;  // BUG on purpose
  s[t] = (float)t;
  __syncthreads();
  out[t] = s[(t + 1) % n];
}
EMU_REGISTER(emu_test_barrier_exit)

// Deliberate bug: threads of one block wait at different __syncthreads calls (divergent barrier).
extern "C" __global__ void emu_test_barrier_diverge(float* out) {
  if (threadIdx.x & 1) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1.0f;
}
EMU_REGISTER(emu_test_barrier_diverge)

// Deliberate bug: lane 0 waits in __shfl_sync for lane 1, which waits at __syncthreads.
extern "C" __global__ void emu_test_deadlock(float* out) {
  float v = 1.0f;
  if (threadIdx.x == 0) v = __shfl_sync(0x3u, v, 1);
  if (threadIdx.x == 1) __syncthreads();
  out[threadIdx.x] = v;
}
EMU_REGISTER(emu_test_deadlock)

// Launch-overhead probe: each thread passes `rounds` barriers; used to time fiber switches.
extern "C" __global__ void emu_test_switch_cost(int rounds, int* out) {
  int acc = 0;
  for (int r = 0; r < rounds; r++) {
    acc += r;
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = acc;
}
EMU_REGISTER(emu_test_switch_cost)

// Deliberate bug: reads one element past the end of in (in has n elements). Only AddressSanitizer catches reads.
extern "C" __global__ void emu_test_oob_read(const float* in, float* out, int n) {
  const int t = global_index();
  if (t <= n) out[0] = in[t];  // BUG on purpose: should be t < n
}
EMU_REGISTER(emu_test_oob_read)

// Deliberate bug: a missing __syncthreads. Thread t stores in[base + t] into shared memory and then reads the slot of
// thread t - 1 (thread 0 reads its own) without a barrier in between, so out[base + t] = in[base + t - 1] only if
// thread t - 1 happened to run its store first. A thread-id-order schedule always does (the bug hides); the reverse
// and random schedules do not, and then the read sees poisoned (NaN) or stale shared memory.
extern "C" __global__ void emu_test_missing_sync(const float* in, float* out) {
  __shared__ float s[1024];
  const int t = threadIdx.x;
  const int base = blockIdx.x * blockDim.x;
  s[t] = in[base + t];
  // BUG on purpose: __syncthreads() belongs here.
  out[base + t] = s[t > 0 ? t - 1 : 0];
}
EMU_REGISTER(emu_test_missing_sync)

// Reads static shared memory before any thread writes it: out[t] = bits of s[t]. Shows what a block finds there
// (0xFFFFFFFF in the reverse and random schedules, which poison it at block start).
extern "C" __global__ void emu_test_shared_uninit(unsigned* out) {
  __shared__ unsigned s[256];
  const int t = threadIdx.x;
  out[blockIdx.x * blockDim.x + t] = s[t];
  __syncthreads();
  s[t] = 0x12345678u;  // what the next block on this OS thread would see without poisoning
}
EMU_REGISTER(emu_test_shared_uninit)
