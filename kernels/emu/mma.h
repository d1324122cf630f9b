// mma.h -- the warp-level tensor-core instructions of the convolutions, for the CPU emulator:
//   mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32  d, a, b, c
//   mma.sync.aligned.m16n8k4.row.col.f32.tf32.tf32.f32  d, a, b, c
//   mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 d, a, b, c
//   cvt.rn.bf16x2.f32                                   d, hi, lo
//   ldmatrix.sync.aligned.m8n8.x4.shared.b16            {d0, d1, d2, d3}, [addr]
//   ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16      {d0, d1, d2, d3}, [addr]
// kernels/mma.cuh calls the functions below where nvcc emits the instructions. Needs kernels/emu/emu.h first.
//
// Semantics (PTX ISA, "Warp-level matrix instructions": mma with .tf32 A and B and .f32 C and D; ldmatrix). D = A·B + C,
// held by the 32 lanes of a warp in registers; groupID = laneid >> 2, threadID_in_group = laneid % 4:
//   m16n8k8  A 16x8  a0..a3 (.b32 holding .tf32)  row = groupID for a0, a2; groupID + 8 for a1, a3
//                                                 col = threadID_in_group for a0, a1; threadID_in_group + 4 for a2, a3
//            B 8x8   b0, b1                       row = threadID_in_group for b0; threadID_in_group + 4 for b1
//                                                 col = groupID
//   m16n8k4  A 16x4  a0, a1                       row = groupID for a0; groupID + 8 for a1; col = threadID_in_group
//            B 4x8   b0                           row = threadID_in_group; col = groupID
//   m16n8k16 A 16x16 a0..a3 (.b32 each holding two .bf16, element 2i in the low half, 2i + 1 in the high half)
//            .bf16                                row = groupID for a0, a2; groupID + 8 for a1, a3
//                                                 col = threadID_in_group·2 + (0, 1) for a0, a1; + 8 for a2, a3
//            B 16x8  b0, b1 (two .bf16 each)      row = threadID_in_group·2 + (0, 1) for b0; + 8 for b1
//                                                 col = groupID
//   all      C, D 16x8  c0..c3 / d0..d3 (.f32)    row = groupID for c0, c1; groupID + 8 for c2, c3
//                                                 col = threadID_in_group·2 + (i & 1) for ci
//   ldmatrix .x4: lanes 8i .. 8i + 7 give the addresses of rows 0..7 of matrix i (16 bytes each, 16-byte aligned, in
//            shared memory); lane l receives in di the 32-bit word l % 4 of row l / 4 of matrix i (the b16 elements
//            2(l % 4) and 2(l % 4) + 1 of that row).
//   ldmatrix .x4.trans: the same rows, each matrix transposed: lane l receives in di the b16 element l / 4 of row
//            2(l % 4) of matrix i in the low half and element l / 4 of row 2(l % 4) + 1 in the high half.
//
// Model. A warp-collective instruction is a mailbox exchange: every lane deposits its operands in a mailbox of its
// warp (per OS thread, i.e. per running block, like static shared memory), the warp meets at __syncwarp, and each lane
// computes its own result from the mailbox. Each warp has two mailboxes, used by its collective instructions in turn:
// a lane writes one only after the warp has met at the next instruction, by which time every lane has finished
// reading it. Checks, each failing the launch:
//   - all 32 lanes of the warp are live and execute the same instruction (.sync.aligned: a warp with exited lanes, a
//     block whose size is not a multiple of 32, or lanes at different instructions is an error);
//   - every finite A and B operand of an MMA is a TF32 value (its 13 low mantissa bits are zero): the PTX ISA leaves
//     the internal layout of .tf32 implementation-defined and makes TF32 values with cvt.rna.tf32.f32, so kernels must
//     round their operands (kernels/mma.cuh f32_to_tf32) before the instruction. NaN and infinity pass through;
//   - ldmatrix addresses are 16-byte aligned and their rows lie in the block's dynamic shared memory (where the
//     kernels keep their tiles).
// Numerics. A product of two TF32 values is exact in FP32, and so is a product of two bfloat16 values (8-bit
// significands: 16 bits); D = C + Σ_k A(r,k)·B(k,n) adds the products to C in k order (k = 0, 1, ..., K − 1 of the
// instruction's A columns) with FP32 rounding to nearest even after each addition. The hardware's order of the FP32
// additions (and whether it keeps extra bits between them) is unspecified, so tests of kernels built on the
// instruction must tolerate any order; the emulator's order is this one, fixed, so its results are reproducible.
// cvt.rn.bf16x2.f32 rounds each FP32 input to bfloat16 to nearest, ties to even (NaN: the canonical 0x7fff; finite
// values past the largest bfloat16 become infinity), the first source into the high half.
#pragma once
#ifndef __CUDACC__
#ifndef EMU_CUDA_SHIM
#error "kernels/emu/mma.h needs kernels/emu/emu.h first"
#endif

#include <cstdint>
#include <cstdio>
#include <cstring>

namespace emu {
// Defined in emu_runtime.h: the size of the running block's dynamic shared memory, and hooks that the runtime calls on
// each thread as it starts the kernel and after it returns.
size_t dynamic_shared_bytes();
int add_thread_hooks(void (*start)(), void (*exit)());

namespace mma {

enum Kind { MMA_K8 = 1, MMA_K4, LDMATRIX_X4, MMA_K16_BF16, LDMATRIX_X4_TRANS };
static const char* const kind_names[] = {"", "mma.sync.aligned.m16n8k8", "mma.sync.aligned.m16n8k4",
                                         "ldmatrix.sync.aligned.m8n8.x4", "mma.sync.aligned.m16n8k16 .bf16",
                                         "ldmatrix.sync.aligned.m8n8.x4.trans"};

struct Slot {
  long long seq;  // the depositing thread's collective-instruction count
  int kind;
  uint32_t a[4], b[2];
  float c[4];
  const unsigned char* addr;
};
// mailbox[parity][warp][lane]; a block has at most 1024 threads = 32 warps. count[tid]: the thread's collective
// instructions so far; its instruction number i uses mailbox i & 1. A thread starting the kernel resets its count and
// marks its slots empty.
static thread_local Slot mailbox[2][32][32];
static thread_local long long count[1024];

static inline int linear_tid() {
  return (int)(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
}

static void on_start() {
  const int tid = linear_tid();
  count[tid] = 0;
  mailbox[0][tid / 32][tid % 32].seq = mailbox[1][tid / 32][tid % 32].seq = -1;
}
static void on_exit() {}
static const int hooks_registered = ::emu::add_thread_hooks(&on_start, &on_exit);

// Deposits this lane's operands (fill) and meets the warp; returns the warp's mailbox.
template <class FILL>
static inline const Slot* exchange(Kind kind, const FILL& fill) {
  (void)hooks_registered;
  // Lanes that do not exist or have exited show here; lanes that exit without reaching this instruction show in
  // their seq.
  if (__activemask() != 0xffffffffu) {
    static thread_local char msg[160];
    snprintf(msg, sizeof msg, "%s: not all 32 lanes of the warp are live (exited lanes, or a partial warp)",
             kind_names[kind]);
    ::emu::trap(msg);
  }
  const int tid = linear_tid(), warp = tid / 32, lane = tid % 32;
  const long long seq = count[tid]++;
  const int par = (int)(seq & 1);
  Slot& mine = mailbox[par][warp][lane];
  mine.seq = seq;
  mine.kind = kind;
  fill(mine);
  __syncwarp();
  const Slot* box = mailbox[par][warp];
  for (int l = 0; l < 32; l++)
    if (box[l].seq != seq || box[l].kind != kind) {
      static thread_local char msg[160];
      snprintf(msg, sizeof msg, "%s: not all 32 lanes of the warp execute it (a lane exited or diverged)",
               kind_names[kind]);
      ::emu::trap(msg);
    }
  return box;
}

static inline bool finite_bits(uint32_t u) { return (u & 0x7f800000u) != 0x7f800000u; }

static inline void check_tf32(const char* what, uint32_t u) {
  if (finite_bits(u) && (u & 0x1fffu) != 0) ::emu::trap(what);  // not made by cvt.rna.tf32.f32
}

static inline float as_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// The bfloat16 bits of x rounded to nearest, ties to even (cvt.rn.bf16.f32); NaN gives the canonical 0x7fff.
static inline uint16_t bf16_rn_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fff;
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static const char* const bad_a =
    "mma.sync .tf32: an A operand is not a TF32 value (low 13 mantissa bits set; round with cvt.rna.tf32.f32)";
static const char* const bad_b =
    "mma.sync .tf32: a B operand is not a TF32 value (low 13 mantissa bits set; round with cvt.rna.tf32.f32)";

// D = A·B + C for an m16n8kK MMA whose A(row, k) and B(k, col) are read by the functors.
template <int K, class FA, class FB>
static inline void mma_result(float d[4], const Slot* box, int lane, const FA& A, const FB& B) {
  const int group = lane >> 2, tig = lane & 3;
  for (int i = 0; i < 4; i++) {
    const int row = group + (i >= 2 ? 8 : 0), col = tig * 2 + (i & 1);
    float acc = box[lane].c[i];
    for (int k = 0; k < K; k++) acc += as_float(A(row, k)) * as_float(B(k, col));
    d[i] = acc;  // d may alias c: box[lane].c holds this lane's C
  }
}

}  // namespace mma

// m16n8k8: d[0..3] = A·B + C for this lane's fragment registers (see the file comment for the layout).
static inline void mma_tf32_m16n8k8(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
  using namespace mma;
  const Slot* box = exchange(MMA_K8, [&](Slot& s) {
    for (int i = 0; i < 4; i++) {
      check_tf32(bad_a, a[i]);
      s.a[i] = a[i];
      s.c[i] = c[i];
    }
    for (int i = 0; i < 2; i++) {
      check_tf32(bad_b, b[i]);
      s.b[i] = b[i];
    }
  });
  // A(row, k): lane (row % 8)·4 + k % 4, register (row ≥ 8) + 2·(k ≥ 4). B(k, col): lane col·4 + k % 4, register k ≥ 4.
  mma_result<8>(
      d, box, linear_tid() % 32,
      [&](int row, int k) { return box[(row & 7) * 4 + (k & 3)].a[(row >= 8 ? 1 : 0) + (k >= 4 ? 2 : 0)]; },
      [&](int k, int col) { return box[col * 4 + (k & 3)].b[k >= 4 ? 1 : 0]; });
}

// m16n8k4: d[0..3] = A·B + C with a[0..1], b (see the file comment for the layout).
static inline void mma_tf32_m16n8k4(float d[4], const uint32_t a[2], uint32_t b, const float c[4]) {
  using namespace mma;
  const Slot* box = exchange(MMA_K4, [&](Slot& s) {
    for (int i = 0; i < 2; i++) {
      check_tf32(bad_a, a[i]);
      s.a[i] = a[i];
    }
    check_tf32(bad_b, b);
    s.b[0] = b;
    for (int i = 0; i < 4; i++) s.c[i] = c[i];
  });
  // A(row, k): lane (row % 8)·4 + k, register row ≥ 8. B(k, col): lane col·4 + k.
  mma_result<4>(
      d, box, linear_tid() % 32, [&](int row, int k) { return box[(row & 7) * 4 + k].a[row >= 8 ? 1 : 0]; },
      [&](int k, int col) { return box[col * 4 + k].b[0]; });
}

// cvt.rn.bf16x2.f32 d, hi, lo.
static inline uint32_t cvt_rn_bf16x2_f32(float hi, float lo) {
  return ((uint32_t)mma::bf16_rn_bits(hi) << 16) | mma::bf16_rn_bits(lo);
}

// m16n8k16 bf16: d[0..3] = A·B + C for this lane's fragment registers (see the file comment for the layout).
static inline void mma_bf16_m16n8k16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
  using namespace mma;
  const Slot* box = exchange(MMA_K16_BF16, [&](Slot& s) {
    for (int i = 0; i < 4; i++) {
      s.a[i] = a[i];
      s.c[i] = c[i];
    }
    for (int i = 0; i < 2; i++) s.b[i] = b[i];
  });
  // A(row, k): lane (row % 8)·4 + (k % 8) / 2, register (row ≥ 8) + 2·(k ≥ 8), half k % 2. B(k, col): lane
  // col·4 + (k % 8) / 2, register k ≥ 8, half k % 2. A bfloat16 widens to FP32 by appending 16 zero bits.
  auto half = [](uint32_t w, int k) { return (k & 1) ? (w & 0xffff0000u) : (w << 16); };
  mma_result<16>(
      d, box, linear_tid() % 32,
      [&](int row, int k) {
        return half(box[(row & 7) * 4 + ((k & 7) >> 1)].a[(row >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0)], k);
      },
      [&](int k, int col) { return half(box[col * 4 + ((k & 7) >> 1)].b[k >= 8 ? 1 : 0], k); });
}

// The checks of an ldmatrix row address: 16-byte aligned, inside the block's dynamic shared memory.
static inline const unsigned char* ldmatrix_row(const void* row) {
  const unsigned char* lo = static_cast<const unsigned char*>(::emu::dynamic_shared());
  const unsigned char* p = static_cast<const unsigned char*>(row);
  if ((reinterpret_cast<uintptr_t>(p) & 15) != 0) ::emu::trap("ldmatrix: a row address is not 16-byte aligned");
  if (lo == nullptr || p < lo || p + 16 > lo + ::emu::dynamic_shared_bytes())
    ::emu::trap("ldmatrix: a row address is outside the block's dynamic shared memory");
  return p;
}

// ldmatrix .x4 .b16: d[i] = word l % 4 of the row whose address lane 8i + l / 4 gave (l = this lane).
static inline void ldmatrix_x4(uint32_t d[4], const void* row) {
  using namespace mma;
  const unsigned char* p = ldmatrix_row(row);
  const Slot* box = exchange(LDMATRIX_X4, [&](Slot& s) { s.addr = p; });
  const int lane = linear_tid() % 32;
  for (int i = 0; i < 4; i++) std::memcpy(&d[i], box[8 * i + lane / 4].addr + 4 * (lane % 4), 4);
}

// ldmatrix .x4 .trans .b16: d[i] = element l / 4 (b16) of the rows whose addresses lanes 8i + 2(l % 4) (low half)
// and 8i + 2(l % 4) + 1 (high half) gave (l = this lane).
static inline void ldmatrix_x4_trans(uint32_t d[4], const void* row) {
  using namespace mma;
  const unsigned char* p = ldmatrix_row(row);
  const Slot* box = exchange(LDMATRIX_X4_TRANS, [&](Slot& s) { s.addr = p; });
  const int lane = linear_tid() % 32;
  for (int i = 0; i < 4; i++) {
    uint16_t lo, hi;
    std::memcpy(&lo, box[8 * i + 2 * (lane % 4)].addr + 2 * (lane / 4), 2);
    std::memcpy(&hi, box[8 * i + 2 * (lane % 4) + 1].addr + 2 * (lane / 4), 2);
    d[i] = (uint32_t)lo | ((uint32_t)hi << 16);
  }
}

}  // namespace emu

#endif  // __CUDACC__
