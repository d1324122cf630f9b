// selftest_tc.cu -- emulator-only kernels for the checks of kernels/emu/mma.h and kernels/emu/cp_async.h (the
// instructions' semantics are probed on both the emulator and a GPU by kernels/tc_probe.cu). Run by
// cuda/tc_probe_test.go; each kernel says what the test expects. Most contain a deliberate misuse, which the
// emulator must report as a launch error naming it (on a GPU they are undefined behaviour).
#include "../common.cuh"
#include "../mma.cuh"

// cp.async of every size with partial zero fill (the .ca form): thread t of one block copies, for the sizes
// s = 4, 8, 16 bytes (cases c = 0, 1, 2), s bytes from src + 12t + 4c to shared memory with src-size
// (t % (s/4 + 1))·4 bytes, all in one group, waits, and writes the s/4 floats to out[12t + 4c + i] (i < s/4; the
// rest of each 4-float slot stays untouched).
extern "C" __global__ void emu_test_cp_async_sizes(const float* src, float* out) {
  DYNAMIC_SHARED(float, sh);
  const int t = threadIdx.x;
  for (int c = 0; c < 3; c++) {
    const int s = 4 << c, src_bytes = (t % (s / 4 + 1)) * 4;
    ::emu::cp_async_ca(sh + 12 * t + 4 * c, src + 12 * t + 4 * c, s, src_bytes);
  }
  cp_async_commit();
  cp_async_wait<0>();
  for (int c = 0; c < 3; c++)
    for (int i = 0; i < (1 << c); i++) out[12 * t + 4 * c + i] = sh[12 * t + 4 * c + i];
}
EMU_REGISTER(emu_test_cp_async_sizes)

// Misuse of cp.async, by `kind`: 0 none (copies 16 bytes, commits, waits); 1 exits with the group committed but not
// waited; 2 exits with the copy never committed; 3 a destination not aligned to 16 bytes; 4 a destination in
// global memory; 5 a source in shared memory; 6 a (.ca) copy of 12 bytes; 7 src-size 20 > 16. The kernel reads its copy
// before waiting when kind is 8, and writes what it read to out[t] (the emulator's NaN marks the unfinished copy).
extern "C" __global__ void emu_test_cp_async_misuse(const float* src, float* out, int kind) {
  DYNAMIC_SHARED(float, sh);
  const int t = threadIdx.x;
  float* dst = sh + 4 * t;
  switch (kind) {
    case 3: dst = sh + 4 * t + 1; break;
    case 4: dst = out + 4 * t; break;
    default: break;
  }
  const float* from = kind == 5 ? sh + 4 * (t ^ 1) : src + 4 * t;
  if (kind == 6)
    ::emu::cp_async_ca(dst, from, 12, 12);
  else
    cp_async_16(dst, from, kind == 7 ? 20 : 16);
  if (kind == 8) out[t] = dst[0];
  if (kind != 2) cp_async_commit();
  if (kind != 1 && kind != 2) cp_async_wait<0>();
  if (kind != 8) out[t] = dst[0];
}
EMU_REGISTER(emu_test_cp_async_misuse)

// Misuse of mma.sync, by `kind`: 0 none (A = B = 1, C = 0, every lane writes d0 = 8 to out[lane]); 1 an A operand
// that is not a TF32 value (1 + 2^-20 in lane 5's a2); 2 lane 31 returns before the MMA (exited lane).
extern "C" __global__ void emu_test_mma_misuse(float* out, int kind) {
  const int lane = threadIdx.x % 32;
  if (kind == 2 && lane == 31) return;
  uint32_t a[4], b[2];
  float c[4] = {0, 0, 0, 0}, d[4];
  for (int i = 0; i < 4; i++) a[i] = __float_as_uint(1.0f);
  for (int i = 0; i < 2; i++) b[i] = __float_as_uint(1.0f);
  if (kind == 1 && lane == 5) a[2] = __float_as_uint(1.0f + 0x1p-20f);
  mma_tf32_m16n8k8(d, a, b, c);
  out[threadIdx.x] = d[0];
}
EMU_REGISTER(emu_test_mma_misuse)

// Misuse of ldmatrix, by `kind`: 0 none (each lane gives the row sh + 4·lane, out[lane] = register 0); 1 a row
// address not 16-byte aligned (lane 3); 2 a row address in global memory (lane 3). Dynamic shared memory 32·16 bytes.
extern "C" __global__ void emu_test_ldmatrix_misuse(float* out, int kind) {
  DYNAMIC_SHARED(float, sh);
  const int lane = threadIdx.x % 32;
  for (int c = 0; c < 4; c++) sh[4 * lane + c] = (float)(4 * lane + c);
  __syncwarp();
  const float* row = sh + 4 * lane;
  if (lane == 3 && kind == 1) row = sh + 1;
  if (lane == 3 && kind == 2) row = out;
  uint32_t d[4];
  ldmatrix_x4(d, row);
  out[lane] = __uint_as_float(d[0]);
}
EMU_REGISTER(emu_test_ldmatrix_misuse)
