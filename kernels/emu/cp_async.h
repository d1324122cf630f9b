// cp_async.h -- the asynchronous global-to-shared copies of the tensor-core convolutions, for the CPU emulator:
//   cp.async.ca.shared.global [dst], [src], cp-size, src-size     (cp-size 4, 8 or 16)
//   cp.async.cg.shared.global [dst], [src], 16, src-size
//   cp.async.commit_group;  cp.async.wait_group N
// kernels/mma.cuh calls these where nvcc emits the instructions. Needs kernels/emu/emu.h first.
//
// Semantics (PTX ISA, "Data Movement and Conversion Instructions: cp.async"): each cp.async copies cp-size bytes to
// shared memory: the first src-size bytes from global memory, zeros for the rest (src-size ≤ cp-size; with src-size
// 0 nothing is read). Both addresses are aligned to cp-size. The copy is asynchronous: the executing thread may rely
// on its result only after a cp.async.wait_group that covers it. commit_group closes the thread's cp.async
// operations issued since the last commit into a group (possibly empty); wait_group N returns when at most the N
// most recent committed groups of the thread are incomplete. Other threads see the data after that wait and a
// barrier.
//
// Model. Each thread of the running block keeps its uncommitted copies and its queue of committed groups. At issue
// the destination is filled with 0xFF bytes (a NaN for floats), so a thread that reads it before the copy is
// complete (a missing wait, or a missing barrier before another thread's data) computes with NaN, and the copy is
// done when a wait_group retires its group. Checks, each failing the launch:
//   - cp-size is 4, 8 or 16 (16 only for .cg), 0 ≤ src-size ≤ cp-size, both addresses aligned to cp-size;
//   - the destination lies in the block's dynamic shared memory (the kernels keep cp.async tiles there) and the
//     source does not (it must be a global address);
//   - every copy is committed and every committed group waited for before the thread exits (unretired copies
//     would be lost work at best and a write racing the next block's shared memory at worst).
#pragma once
#ifndef __CUDACC__
#ifndef EMU_CUDA_SHIM
#error "kernels/emu/cp_async.h needs kernels/emu/emu.h first"
#endif

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <vector>

namespace emu {
// Defined in emu_runtime.h: the size of the running block's dynamic shared memory, and hooks that the runtime calls
// on each thread of a block as it starts the kernel and after it returns from it (a hook may trap()).
size_t dynamic_shared_bytes();
int add_thread_hooks(void (*start)(), void (*exit)());
void* block_local(int slot, void* (*make)(), void (*release)(void*));

namespace cpasync {

struct Copy {
  void* dst;
  const void* src;
  int size, src_size;
};
struct State {
  std::vector<Copy> pending;             // issued since the last commit
  std::deque<std::vector<Copy>> groups;  // committed, oldest first
};
// One state per thread of the running block (a block has at most 1024 threads), per emulator worker like static
// shared memory; but in the worker's block_local slot 0, not thread_local: the reverse and random schedules fill
// thread-local storage with 0xFF bytes at block start, which would break the queues' pointers.
static void* make_states() { return new State[1024]; }
static void free_states(void* p) { delete[] static_cast<State*>(p); }

static inline State& mine() {
  State* states = static_cast<State*>(::emu::block_local(0, &make_states, &free_states));
  return states[threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)];
}

static inline void perform(const std::vector<Copy>& g) {
  for (const Copy& c : g) {
    if (c.src_size > 0) std::memcpy(c.dst, c.src, c.src_size);
    std::memset(static_cast<char*>(c.dst) + c.src_size, 0, c.size - c.src_size);
  }
}

static void on_start() {  // a block abandoned by an error may leave state behind
  State& s = mine();
  s.pending.clear();
  s.groups.clear();
}

static void on_exit() {
  State& s = mine();
  const size_t pending = s.pending.size(), groups = s.groups.size();
  s.pending.clear();
  s.groups.clear();
  if (pending == 0 && groups == 0) return;
  static thread_local char msg[160];
  snprintf(msg, sizeof msg,
           "cp.async: thread exits with %zu uncommitted copies and %zu committed groups not waited for "
           "(cp.async.commit_group / cp.async.wait_group 0 before the end)",
           pending, groups);
  ::emu::trap(msg);
}

static const int hooks_registered = ::emu::add_thread_hooks(&on_start, &on_exit);

static inline void issue(void* dst, const void* src, int cp_size, int src_size, bool cg) {
  (void)hooks_registered;
  if (cp_size != 4 && cp_size != 8 && cp_size != 16) ::emu::trap("cp.async: cp-size must be 4, 8 or 16");
  if (cg && cp_size != 16) ::emu::trap("cp.async.cg: cp-size must be 16");
  if (src_size < 0 || src_size > cp_size) ::emu::trap("cp.async: src-size outside [0, cp-size]");
  const uintptr_t d = reinterpret_cast<uintptr_t>(dst), s = reinterpret_cast<uintptr_t>(src);
  if (d % cp_size != 0) ::emu::trap("cp.async: shared destination not aligned to cp-size");
  if (src_size > 0 && s % cp_size != 0) ::emu::trap("cp.async: global source not aligned to cp-size");
  const uintptr_t lo = reinterpret_cast<uintptr_t>(::emu::dynamic_shared()), hi = lo + ::emu::dynamic_shared_bytes();
  if (lo == 0 || d < lo || d + cp_size > hi)
    ::emu::trap("cp.async: destination outside the block's dynamic shared memory");
  if (src_size > 0 && (s == 0 || (s + src_size > lo && s < hi)))
    ::emu::trap("cp.async: source is not a global address");
  std::memset(dst, 0xff, cp_size);  // undefined until the copy completes
  mine().pending.push_back(Copy{dst, src, cp_size, src_size});
}

}  // namespace cpasync

static inline void cp_async_ca(void* dst, const void* src, int cp_size, int src_size) {
  cpasync::issue(dst, src, cp_size, src_size, false);
}
static inline void cp_async_cg(void* dst, const void* src, int src_size) { cpasync::issue(dst, src, 16, src_size, true); }

static inline void cp_async_commit() {
  cpasync::State& s = cpasync::mine();
  s.groups.push_back(std::move(s.pending));
  s.pending.clear();
}

static inline void cp_async_wait_group(int n) {
  cpasync::State& s = cpasync::mine();
  while ((int)s.groups.size() > n) {
    cpasync::perform(s.groups.front());
    s.groups.pop_front();
  }
}

}  // namespace emu

#endif  // __CUDACC__
