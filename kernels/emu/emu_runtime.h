// emu_runtime.h -- the scheduler, launcher and allocator behind emu.h. Include once, after emu.h and the kernels.
//
// Fibers. Each CUDA thread of a block is a fiber with a fixed mmap'd stack (EMU_STACK bytes plus a PROT_NONE guard
// page below it). emu_ctx_switch (x86-64 asm below) saves rbx, rbp, r12-r15, mxcsr and the x87 control word on the
// current stack, stores rsp, loads the other rsp and restores the same set: a switch is a few nanoseconds, with no
// system call (swapcontext saves the signal mask with one). Fibers are owned by one worker OS thread and never move.
//
// Scheduling a block. The worker runs its fibers round robin; a fiber runs until it reaches a barrier, a warp
// intrinsic, or the end of the kernel, and then switches back. A __syncthreads completes when all threads of the
// block have reached the same call site; a warp intrinsic completes when every non-exited lane named in its mask has
// reached a warp intrinsic with the same mask and kind. The following abort the launch with an error (CUDA leaves
// them undefined; on a GPU they hang or corrupt): a thread exits while others wait at __syncthreads, or reaches
// __syncthreads after another thread exited; threads wait at different __syncthreads sites; lanes of one group use
// different intrinsics or masks; a warp intrinsic's mask omits the calling lane; no thread can make progress.
//
// Schedules. Any order in which the threads of a block run between barriers is legal in CUDA, and a kernel whose
// result depends on it has a race (typically a missing __syncthreads). DDPM_EMU_ORDER (or emu_set_order) picks one:
//   forward        (default) each pass over the block runs its runnable threads in thread-id order;
//   reverse        in reverse thread-id order;
//   random[:SEED]  in a fresh pseudo-random order at every pass (every barrier interval), drawn from SEED (default
//                  1), the launch's sequence number in the process, the block index and the pass number.
// In reverse and random, the static __shared__ arrays (which are thread_local and otherwise keep what the previous
// block on the OS thread wrote) are filled with 0xFF bytes at block start, as dynamic shared memory always is, so that
// a read before any write sees NaN instead of plausible data.
//
// Under AddressSanitizer, every switch is announced with __sanitizer_{start,finish}_switch_fiber.
#pragma once
#ifndef __CUDACC__

#include <link.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EMU_ASAN 1
#endif
#endif
#ifdef EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

#if !defined(__x86_64__)
#error "the CUDA emulator's context switch is written for x86-64"
#endif

extern "C" void emu_ctx_switch(void** save_sp, void* load_sp);
extern "C" void emu_fiber_trampoline();
// emu_ctx_switch(save, load): push callee-saved state, *save = rsp, rsp = load, pop the state saved there, return.
// emu_fiber_trampoline: first "return" of a new fiber lands here with the Fiber* in r12.
asm(R"(
.text
.p2align 4
.globl emu_ctx_switch
.hidden emu_ctx_switch
.type emu_ctx_switch,@function
emu_ctx_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.size emu_ctx_switch,.-emu_ctx_switch

.p2align 4
.globl emu_fiber_trampoline
.hidden emu_fiber_trampoline
.type emu_fiber_trampoline,@function
emu_fiber_trampoline:
  movq %r12, %rdi
  andq $-16, %rsp
  call emu_fiber_main@PLT
  ud2
.size emu_fiber_trampoline,.-emu_fiber_trampoline
)");

namespace emu {

#ifdef EMU_ASAN
static const size_t kStack = 512 << 10;  // ASan's redzones make frames several times larger
#else
static const size_t kStack = 128 << 10;
#endif
static const size_t kPage = 4096;

enum State { RUN, BAR, WARP, DONE };

struct Fiber {
  void* sp = nullptr;  // saved stack pointer while switched out
  char* stack_lo = nullptr;
  uint3 tid{0, 0, 0};
  int linear = 0, lane = 0, warp = 0;
  State state = DONE;
  // __syncthreads
  const char* site = nullptr;
  int pred = 0, bar_result = 0;
  BarKind bar_kind = BAR_PLAIN;
  // warp intrinsics
  WarpOp op = W_SYNC;
  unsigned mask = 0;
  uint64_t val = 0, out = 0;
  int arg = 0, width = 32;
  void* asan_fake = nullptr;
  bool abandoned = false;  // left mid-kernel by an aborted block: its stack may hold ASan-poisoned frames
};

struct Kernel {
  const char* name;
  void (*fn)();
  Thunk thunk;
  int nargs;
  const char* kinds;
  const int* sizes;
};

struct Block {
  uint3 bid{0, 0, 0};
  dim3 bdim, gdim;
  int n = 0, exited = 0, done = 0;
  int bar_arrived = 0, bar_pred = 0;
  const char* bar_site = nullptr;
  const Kernel* kernel = nullptr;
  void** params = nullptr;
  std::vector<char> dyn_shared;
  void* sched_sp = nullptr;
  const void* sched_stack_lo = nullptr;  // for ASan
  size_t sched_stack_size = 0;
  std::string err;
  std::vector<Fiber> fibers;
  std::vector<int> order;  // this pass's order of fibers (reverse and random schedules)
  int sched = 0;           // the launch's Schedule
  uint64_t seed = 0;       // the launch's seed for random (already mixed with the launch's sequence number)
  // Per-worker state of instruction emulations that must not live in thread-local storage, which the reverse and
  // random schedules poison at block start (objects that own memory, such as cp_async.h's queues): block_local.
  static const int kExt = 4;
  void* ext[kExt] = {};
  void (*ext_free[kExt])(void*) = {};
  Block() = default;
  Block(const Block&) = delete;
  Block& operator=(const Block&) = delete;
  ~Block() {
    for (int i = 0; i < kExt; i++)
      if (ext[i] && ext_free[i]) ext_free[i](ext[i]);
  }
};

const uint3& fiber_tid(const Fiber* f) { return f->tid; }
const uint3& block_bid(const Block* b) { return b->bid; }
const dim3& block_dim(const Block* b) { return b->bdim; }
const dim3& grid_dim(const Block* b) { return b->gdim; }
void* dynamic_shared() { return tl_block->dyn_shared.empty() ? nullptr : tl_block->dyn_shared.data(); }
size_t dynamic_shared_bytes() { return tl_block->dyn_shared.size(); }

// block_local is the running worker's object in slot (0: kernels/emu/cp_async.h), made by make() on first use and
// freed by release() when the worker ends. It outlives blocks (hooks reset it per thread) and, unlike thread_local
// variables, is not in the static shared memory that the reverse and random schedules poison.
void* block_local(int slot, void* (*make)(), void (*release)(void*)) {
  Block* b = tl_block;
  if (slot < 0 || slot >= Block::kExt) trap("emulator: block_local slot out of range");
  if (!b->ext[slot]) {
    b->ext[slot] = make();
    b->ext_free[slot] = release;
  }
  return b->ext[slot];
}

// Thread hooks (e.g. kernels/emu/cp_async.h): start runs on each thread before the kernel, exit after it returns.
struct ThreadHooks {
  void (*start)();
  void (*exit)();
};
static std::vector<ThreadHooks>& thread_hooks() {
  static std::vector<ThreadHooks> h;
  return h;
}
int add_thread_hooks(void (*start)(), void (*exit)()) {
  thread_hooks().push_back(ThreadHooks{start, exit});
  return (int)thread_hooks().size();
}

// ---- switching ----------------------------------------------------------------------------------------------------
static void switch_to_fiber(Block* b, Fiber* f) {
  tl_fiber = f;
#ifdef EMU_ASAN
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, f->stack_lo, kStack);
  emu_ctx_switch(&b->sched_sp, f->sp);
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#else
  emu_ctx_switch(&b->sched_sp, f->sp);
#endif
  tl_fiber = nullptr;
}

// Called on the fiber's stack: give control back to the block's scheduler until it resumes this fiber.
static void yield_fiber(Fiber* f, bool dying) {
  Block* b = tl_block;
#ifdef EMU_ASAN
  __sanitizer_start_switch_fiber(dying ? nullptr : &f->asan_fake, b->sched_stack_lo, b->sched_stack_size);
  emu_ctx_switch(&f->sp, b->sched_sp);
  __sanitizer_finish_switch_fiber(f->asan_fake, nullptr, nullptr);
#else
  (void)dying;
  emu_ctx_switch(&f->sp, b->sched_sp);
#endif
}

extern "C" __attribute__((visibility("hidden"), used)) void emu_fiber_main(Fiber* f) {
#ifdef EMU_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &tl_block->sched_stack_lo, &tl_block->sched_stack_size);
#endif
  Block* b = tl_block;
  for (const ThreadHooks& h : thread_hooks()) h.start();
  b->kernel->thunk(b->kernel->fn, b->params);
  for (const ThreadHooks& h : thread_hooks()) h.exit();
  f->state = DONE;
  yield_fiber(f, true);
  __builtin_trap();  // a finished fiber is never resumed
}

// Lay out a fresh frame so that the first switch to f "returns" into emu_fiber_trampoline with r12 = f.
static void init_fiber(Fiber* f) {
  uint64_t* top = reinterpret_cast<uint64_t*>(f->stack_lo + kStack);
#ifdef EMU_ASAN
  // A fiber that ran to the end returned from every instrumented frame, which unpoisons them; one abandoned
  // mid-kernel leaves poisoned redzones behind. (Unpoisoning every stack on every block would dominate run time.)
  if (f->abandoned) ASAN_UNPOISON_MEMORY_REGION(f->stack_lo, kStack);
#endif
  f->abandoned = false;
  uint32_t csr;
  uint16_t cw;
  asm volatile("stmxcsr %0" : "=m"(csr));
  asm volatile("fnstcw %0" : "=m"(cw));
  uint64_t* sp = top - 9;
  sp[0] = (uint64_t)csr | ((uint64_t)cw << 32);                  // mxcsr, x87 control word
  sp[1] = 0;                                                      // r15
  sp[2] = 0;                                                      // r14
  sp[3] = 0;                                                      // r13
  sp[4] = reinterpret_cast<uint64_t>(f);                          // r12: the trampoline's argument
  sp[5] = 0;                                                      // rbx
  sp[6] = 0;                                                      // rbp
  sp[7] = reinterpret_cast<uint64_t>(&emu_fiber_trampoline);      // return address
  sp[8] = 0;
  f->sp = sp;
}

static char* alloc_stack() {
  void* p = mmap(nullptr, kStack + kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) return nullptr;
  mprotect(p, kPage, PROT_NONE);  // guard page: a stack overflow faults instead of corrupting a neighbour
  return static_cast<char*>(p) + kPage;
}

// ---- errors -------------------------------------------------------------------------------------------------------
static void fail(Block* b, const char* fmt, ...) {
  if (!b->err.empty()) return;
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  char where[128];
  snprintf(where, sizeof where, "kernel %s block (%u,%u,%u): ", b->kernel->name, b->bid.x, b->bid.y, b->bid.z);
  b->err = std::string(where) + buf;
}

[[noreturn]] void trap(const char* why) {
  Fiber* f = tl_fiber;
  fail(tl_block, "thread (%u,%u,%u): %s", f->tid.x, f->tid.y, f->tid.z, why);
  f->state = DONE;
  yield_fiber(f, true);  // the scheduler sees the error and abandons the block
  __builtin_trap();
}

// ---- barriers -----------------------------------------------------------------------------------------------------
int syncthreads(const char* site, int pred, BarKind kind) {
  Fiber* f = tl_fiber;
  f->site = site;
  f->pred = pred;
  f->bar_kind = kind;
  f->state = BAR;
  yield_fiber(f, false);
  return f->bar_result;
}

uint64_t warp_op(WarpOp op, unsigned mask, uint64_t val, int arg, int width) {
  Fiber* f = tl_fiber;
  f->op = op;
  f->mask = mask;
  f->val = val;
  f->arg = arg;
  f->width = width;
  f->state = WARP;
  yield_fiber(f, false);
  return f->out;
}

static const char* op_name(WarpOp op) {
  static const char* names[] = {"__syncwarp", "__shfl_sync", "__shfl_up_sync", "__shfl_down_sync", "__shfl_xor_sync",
                                "__ballot_sync", "__any_sync", "__all_sync"};
  return names[op];
}

// Lanes of warp w that exist (the last warp of a block may be partial) and have not exited.
static unsigned live_lanes(Block* b, int w) {
  unsigned m = 0;
  for (int l = 0; l < 32 && w * 32 + l < b->n; l++)
    if (b->fibers[w * 32 + l].state != DONE) m |= 1u << l;
  return m;
}

unsigned active_mask() {
  Fiber* f = tl_fiber;
  return live_lanes(tl_block, f->warp);
}

// Release every group of warp w whose named, non-exited lanes all wait at a warp intrinsic.
static void try_release_warp(Block* b, int w) {
  const int base = w * 32;
  const unsigned live = live_lanes(b, w);
  for (int l = 0; l < 32 && base + l < b->n; l++) {
    Fiber& f = b->fibers[base + l];
    if (f.state != WARP) continue;
    if (!(f.mask & (1u << l))) {
      fail(b, "thread (%u,%u,%u): %s mask 0x%08x omits the calling lane %d", f.tid.x, f.tid.y, f.tid.z,
           op_name(f.op), f.mask, l);
      return;
    }
    const unsigned group = f.mask & live;
    bool ready = true;
    for (int k = 0; k < 32; k++) {
      if (!(group & (1u << k))) continue;
      Fiber& g = b->fibers[base + k];
      if (g.state != WARP) {
        ready = false;
        continue;
      }
      if (g.mask != f.mask || g.op != f.op) {
        fail(b, "warp %d: lane %d is in %s(mask 0x%08x) while lane %d is in %s(mask 0x%08x)", w, l, op_name(f.op),
             f.mask, k, op_name(g.op), g.mask);
        return;
      }
    }
    if (!ready) continue;
    uint64_t ballot = 0;
    for (int k = 0; k < 32; k++)
      if ((group & (1u << k)) && b->fibers[base + k].val) ballot |= 1ull << k;
    for (int k = 0; k < 32; k++) {
      if (!(group & (1u << k))) continue;
      Fiber& g = b->fibers[base + k];
      const int wd = g.width;
      const int seg = k & ~(wd - 1);  // first lane of this lane's width-segment
      int src = k;
      switch (g.op) {
        case W_IDX: src = seg + (g.arg & (wd - 1)); break;
        case W_UP: src = (k - seg) >= g.arg ? k - g.arg : k; break;
        case W_DOWN: src = (k - seg) + g.arg < wd ? k + g.arg : k; break;
        case W_XOR: src = k ^ g.arg; src = (src >= seg && src < seg + wd) ? src : k; break;
        default: break;
      }
      switch (g.op) {
        case W_BALLOT: g.out = ballot; break;
        case W_ANY: g.out = ballot != 0; break;
        case W_ALL: g.out = ballot == (uint64_t)group; break;
        case W_SYNC: g.out = 0; break;
        default:
          // Reading a lane outside the group is undefined in CUDA; return the caller's own value.
          g.out = (src >= 0 && src < 32 && (group & (1u << src))) ? b->fibers[base + src].val : g.val;
      }
    }
    for (int k = 0; k < 32; k++)
      if (group & (1u << k)) b->fibers[base + k].state = RUN;
  }
}

static void on_barrier(Block* b, Fiber& f) {
  if (b->exited > 0) {
    fail(b, "thread (%u,%u,%u) reached __syncthreads at %s after %d thread(s) of the block exited", f.tid.x, f.tid.y,
         f.tid.z, f.site, b->exited);
    return;
  }
  if (b->bar_arrived == 0) {
    b->bar_site = f.site;
    b->bar_pred = 0;
  } else if (std::strcmp(b->bar_site, f.site) != 0) {
    fail(b, "threads wait at different barriers: thread (%u,%u,%u) at %s, others at %s", f.tid.x, f.tid.y, f.tid.z,
         f.site, b->bar_site);
    return;
  }
  b->bar_arrived++;
  b->bar_pred += f.pred;
  if (b->bar_arrived < b->n) return;
  for (int i = 0; i < b->n; i++) {
    Fiber& g = b->fibers[i];
    switch (g.bar_kind) {
      case BAR_PLAIN: g.bar_result = 0; break;
      case BAR_COUNT: g.bar_result = b->bar_pred; break;
      case BAR_AND: g.bar_result = b->bar_pred == b->n; break;
      case BAR_OR: g.bar_result = b->bar_pred > 0; break;
    }
    g.state = RUN;
  }
  b->bar_arrived = 0;
}

static void on_exit(Block* b, Fiber& f) {
  b->exited++;
  b->done++;
  if (b->bar_arrived > 0) {
    fail(b, "thread (%u,%u,%u) exited while %d thread(s) wait at __syncthreads at %s", f.tid.x, f.tid.y, f.tid.z,
         b->bar_arrived, b->bar_site);
    return;
  }
  try_release_warp(b, f.warp);  // a warp intrinsic does not wait for exited lanes
}

// ---- schedules (DDPM_EMU_ORDER) -----------------------------------------------------------------------------------
enum Schedule { SCHED_FORWARD, SCHED_REVERSE, SCHED_RANDOM, SCHED_INVALID };
static std::mutex sched_mu;
static bool sched_read_env = false;
static int sched_mode = SCHED_FORWARD;
static uint64_t sched_seed = 1;
static std::string sched_spec = "forward", sched_err;

static uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// parse_schedule reads "forward", "reverse", "random" or "random:SEED" (SEED a decimal uint64).
static bool parse_schedule(const char* spec, int* mode, uint64_t* seed) {
  *seed = 1;
  if (std::strcmp(spec, "forward") == 0 || spec[0] == 0) {
    *mode = SCHED_FORWARD;
    return true;
  }
  if (std::strcmp(spec, "reverse") == 0) {
    *mode = SCHED_REVERSE;
    return true;
  }
  if (std::strncmp(spec, "random", 6) == 0 && (spec[6] == 0 || spec[6] == ':')) {
    *mode = SCHED_RANDOM;
    if (spec[6] == ':') {
      char* end = nullptr;
      errno = 0;
      unsigned long long v = std::strtoull(spec + 7, &end, 10);
      if (spec[7] == 0 || *end != 0 || errno != 0 || spec[7] == '-') return false;
      *seed = v;
    }
    return true;
  }
  return false;
}

// Called with sched_mu held: the schedule of the next launch, from DDPM_EMU_ORDER unless emu_set_order chose one.
static void schedule_from_env() {
  if (sched_read_env) return;
  sched_read_env = true;
  const char* env = std::getenv("DDPM_EMU_ORDER");
  if (!env) return;
  int mode;
  uint64_t seed;
  if (!parse_schedule(env, &mode, &seed)) {
    sched_mode = SCHED_INVALID;
    sched_err = std::string("DDPM_EMU_ORDER=") + env + ": want forward, reverse, random or random:SEED";
    sched_spec = env;
    return;
  }
  sched_mode = mode;
  sched_seed = seed;
  sched_spec = env;
}

// Static shared memory: the span of this module's TLS from emu_shared_begin (emu.h) to the end of the block, which
// holds the __shared__ arrays and tl_fiber/tl_block (saved and restored around the fill). Computed once; 0 disables
// the poisoning (with a warning) if the layout is not as expected.
static size_t shared_span = 0;
static std::once_flag shared_span_once;

struct TLSFind {
  uintptr_t code;  // an address in this module's code
  char* tls = nullptr;
  size_t memsz = 0;
};
static int find_tls_module(struct dl_phdr_info* info, size_t, void* data) {
  TLSFind* f = static_cast<TLSFind*>(data);
  bool mine = false;
  const ElfW(Phdr)* tls = nullptr;
  for (int i = 0; i < info->dlpi_phnum; i++) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type == PT_LOAD && f->code >= info->dlpi_addr + ph.p_vaddr &&
        f->code < info->dlpi_addr + ph.p_vaddr + ph.p_memsz)
      mine = true;
    if (ph.p_type == PT_TLS) tls = &ph;
  }
  if (!mine) return 0;
  if (tls && info->dlpi_tls_data) {
    f->tls = static_cast<char*>(info->dlpi_tls_data);
    f->memsz = tls->p_memsz;
  }
  return 1;
}

static void compute_shared_span() {
  char* begin = emu_shared_begin;  // touching it makes sure this thread's block exists
  TLSFind f;
  f.code = reinterpret_cast<uintptr_t>(&compute_shared_span);
  dl_iterate_phdr(find_tls_module, &f);
  char* end = f.tls ? f.tls + f.memsz : nullptr;
  auto inside = [&](const void* p) { return (const char*)p >= begin && (const char*)p < end; };
  if (!f.tls || begin < f.tls || begin >= end || !inside(&tl_fiber) || !inside(&tl_block)) {
    fprintf(stderr, "emulator: static shared memory is not where expected (TLS block %p+%zu, marker %p): not poisoning it\n",
            (void*)f.tls, f.memsz, (void*)begin);
    return;
  }
  shared_span = end - begin;
}

// poison_static_shared fills this OS thread's static __shared__ arrays with 0xFF bytes.
static void poison_static_shared() {
  std::call_once(shared_span_once, compute_shared_span);
  if (shared_span == 0) return;
  Fiber* f = tl_fiber;
  Block* b = tl_block;
  // The fill overwrites tl_fiber and tl_block too, which the compiler cannot see (it writes "past" the zero-length
  // marker): hide the pointer's origin and clobber memory, so that the restoring stores are not dropped as redundant.
  char* p = emu_shared_begin;
  asm volatile("" : "+r"(p) : : "memory");
  std::memset(p, 0xff, shared_span);
  asm volatile("" : : : "memory");
  tl_fiber = f;
  tl_block = b;
}

// next_pass sets b->order for one pass over the block's fibers (reverse and random schedules).
static void next_pass(Block* b, uint64_t pass) {
  b->order.resize(b->n);
  if (b->sched == SCHED_REVERSE) {
    for (int i = 0; i < b->n; i++) b->order[i] = b->n - 1 - i;
    return;
  }
  uint64_t x = b->seed ^ (((uint64_t)b->bid.z << 42) ^ ((uint64_t)b->bid.y << 21) ^ b->bid.x) * 0x9e3779b97f4a7c15ull;
  x ^= pass * 0xd1b54a32d192ed03ull;
  for (int i = 0; i < b->n; i++) b->order[i] = i;
  for (int i = b->n - 1; i > 0; i--) std::swap(b->order[i], b->order[splitmix64(x) % (uint64_t)(i + 1)]);
}

// Run one block to completion on this OS thread. Returns false (with b->err set) on misuse.
static bool run_block(Block* b) {
  for (int i = 0; i < b->n; i++) {
    Fiber& f = b->fibers[i];
    f.tid = uint3{(unsigned)(i % b->bdim.x), (unsigned)((i / b->bdim.x) % b->bdim.y),
                  (unsigned)(i / (b->bdim.x * b->bdim.y))};
    f.linear = i;
    f.lane = i % 32;
    f.warp = i / 32;
    f.state = RUN;
    f.bar_result = 0;
    init_fiber(&f);
  }
  b->exited = b->done = b->bar_arrived = 0;
  b->err.clear();
  tl_block = b;
  const bool ordered = b->sched != SCHED_FORWARD;
  if (ordered) poison_static_shared();
  for (uint64_t pass = 0; b->done < b->n; pass++) {
    bool progressed = false;
    if (ordered) next_pass(b, pass);
    for (int k = 0; k < b->n && b->err.empty(); k++) {
      const int i = ordered ? b->order[k] : k;
      Fiber& f = b->fibers[i];
      if (f.state != RUN) continue;
      progressed = true;
      switch_to_fiber(b, &f);
      switch (f.state) {
        case DONE: on_exit(b, f); break;
        case BAR: on_barrier(b, f); break;
        case WARP: try_release_warp(b, f.warp); break;
        case RUN: break;
      }
    }
    if (!b->err.empty()) {
      for (int i = 0; i < b->n; i++) b->fibers[i].abandoned = true;  // trap() marks its fiber DONE mid-kernel too
      return false;
    }
    if (!progressed) {
      int bar = 0, warp = 0, first_warp = -1;
      for (int i = 0; i < b->n; i++) {
        Fiber& f = b->fibers[i];
        if (f.state == BAR) bar++;
        if (f.state == WARP) {
          warp++;
          if (first_warp < 0) first_warp = f.linear;
        }
      }
      Fiber& g = b->fibers[first_warp < 0 ? 0 : first_warp];
      fail(b, "deadlock: %d thread(s) at __syncthreads, %d at warp intrinsics (e.g. thread (%u,%u,%u) in %s mask 0x%08x)",
           bar, warp, g.tid.x, g.tid.y, g.tid.z, op_name(g.op), g.mask);
      for (int i = 0; i < b->n; i++) b->fibers[i].abandoned = true;
      return false;
    }
  }
  return true;
}

// ---- kernel registry ----------------------------------------------------------------------------------------------
static std::vector<Kernel>& registry() {
  static std::vector<Kernel> r;
  return r;
}
int register_kernel(const char* name, void (*fn)(), Thunk thunk, int nargs, const char* kinds, const int* sizes) {
  registry().push_back(Kernel{name, fn, thunk, nargs, kinds, sizes});
  return (int)registry().size();
}
static const Kernel* find_kernel(const char* name) {
  for (const Kernel& k : registry())
    if (std::strcmp(k.name, name) == 0) return &k;
  return nullptr;
}

// ---- worker pool --------------------------------------------------------------------------------------------------
struct Launch {
  const Kernel* kernel;
  dim3 grid, block;
  size_t smem;
  void** params;
  std::atomic<long> next{0};
  std::atomic<bool> failed{false};
  std::mutex err_mu;
  std::string err;
  int sched = SCHED_FORWARD;
  uint64_t seed = 0;
};

struct Pool {
  std::mutex mu;
  std::condition_variable cv_work, cv_done;
  Launch* job = nullptr;
  uint64_t generation = 0;
  int running = 0;
  int nthreads = 0;
  bool started = false;
};
// Never destroyed: at exit the workers still wait on its condition variable, and destroying that would block.
static Pool& pool = *new Pool;
static std::mutex launch_mu;  // one launch at a time (a stream)
static int want_workers = 2;

static void work_on(Launch* L, Block& b) {
  const long nblocks = (long)L->grid.x * L->grid.y * L->grid.z;
  const int n = (int)(L->block.x * L->block.y * L->block.z);
  if ((int)b.fibers.size() < n) {
    size_t old = b.fibers.size();
    b.fibers.resize(n);
    for (size_t i = old; i < (size_t)n; i++) b.fibers[i].stack_lo = alloc_stack();
  }
  for (size_t i = 0; i < (size_t)n; i++)
    if (!b.fibers[i].stack_lo) {
      std::lock_guard<std::mutex> g(L->err_mu);
      L->err = "emulator: mmap of a fiber stack failed";
      L->failed = true;
      return;
    }
  b.n = n;
  b.bdim = L->block;
  b.gdim = L->grid;
  b.kernel = L->kernel;
  b.params = L->params;
  b.sched = L->sched;
  b.seed = L->seed;
  b.dyn_shared.assign(L->smem, (char)0xff);  // uninitialised on a GPU; all-ones bytes read as NaN
  for (;;) {
    if (L->failed) break;
    long id = L->next.fetch_add(1);
    if (id >= nblocks) break;
    b.bid = uint3{(unsigned)(id % L->grid.x), (unsigned)((id / L->grid.x) % L->grid.y),
                  (unsigned)(id / ((long)L->grid.x * L->grid.y))};
    if (!run_block(&b)) {
      std::lock_guard<std::mutex> g(L->err_mu);
      if (L->err.empty()) L->err = b.err;
      L->failed = true;
      break;
    }
  }
  tl_block = nullptr;
}

static void worker_loop() {
  Block b;  // this worker's fibers and block state; never shared with another OS thread
  uint64_t seen = 0;
  for (;;) {
    Launch* L;
    {
      std::unique_lock<std::mutex> g(pool.mu);
      pool.cv_work.wait(g, [&] { return pool.generation != seen; });
      seen = pool.generation;
      L = pool.job;
    }
    work_on(L, b);
    {
      std::lock_guard<std::mutex> g(pool.mu);
      if (--pool.running == 0) pool.cv_done.notify_all();
    }
  }
}

// ---- guarded allocations ------------------------------------------------------------------------------------------
static const size_t kGuard = 256;         // bytes of canary on each side; also the device alignment
static const unsigned char kCanary = 0xA7;  // not 0x00 or 0xFF, which kernels write often
struct Alloc {
  size_t bytes;
  bool guarded;
};
static std::mutex alloc_mu;
static std::unordered_map<uintptr_t, Alloc> allocs;

// Bytes behind an allocation of `bytes`: rounded up to the alignment, plus a canary band on each side if guarded.
static size_t alloc_total(size_t bytes, bool guarded) {
  size_t cap = (bytes + kGuard - 1) / kGuard * kGuard;
  if (cap == 0) cap = kGuard;
  return cap + (guarded ? 2 * kGuard : 0);
}

static bool guard_ok(const unsigned char* p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != kCanary) return false;
  return true;
}

}  // namespace emu

// ---- C API used by the Go driver (cuda/emu.go) --------------------------------------------------------------------
extern "C" {

// emu_kernel_count and emu_kernel_name list the registered kernels (for coverage tests).
int emu_kernel_count() { return (int)emu::registry().size(); }
const char* emu_kernel_name(int i) { return emu::registry().at(i).name; }

// emu_kernel_signature gives the C++ signature of kernel `name`: its argument count, kinds ('p' pointer, 'i' signed,
// 'u' unsigned, 'f' float) and byte sizes. Returns 0, or -1 if no such kernel is registered.
int emu_kernel_signature(const char* name, int* nargs, const char** kinds, const int** sizes) {
  const emu::Kernel* k = emu::find_kernel(name);
  if (!k) return -1;
  *nargs = k->nargs;
  *kinds = k->kinds;
  *sizes = k->sizes;
  return 0;
}

// emu_set_order sets the schedule of later launches (see "Schedules" above; it overrides DDPM_EMU_ORDER). Returns 0,
// or -1 with a message in err for a spec it does not know.
int emu_set_order(const char* spec, char* err, int errlen) {
  using namespace emu;
  int mode;
  uint64_t seed;
  if (!parse_schedule(spec, &mode, &seed)) {
    snprintf(err, errlen, "emulator order %s: want forward, reverse, random or random:SEED", spec);
    return -1;
  }
  std::lock_guard<std::mutex> g(sched_mu);
  sched_read_env = true;
  sched_mode = mode;
  sched_seed = seed;
  sched_spec = spec[0] ? spec : "forward";
  return 0;
}

// emu_get_order writes the schedule of the next launch (as DDPM_EMU_ORDER spells it) into buf.
void emu_get_order(char* buf, int len) {
  using namespace emu;
  std::lock_guard<std::mutex> g(sched_mu);
  schedule_from_env();
  snprintf(buf, len, "%s", sched_spec.c_str());
}

// emu_shared_poison_bytes is how many bytes of static shared memory the reverse and random schedules fill at block
// start on this OS thread (0: poisoning is off because the TLS layout was not as expected).
long emu_shared_poison_bytes() {
  using namespace emu;
  std::call_once(shared_span_once, compute_shared_span);
  return (long)shared_span;
}

void emu_set_workers(int n) {
  std::lock_guard<std::mutex> g(emu::launch_mu);
  if (n >= 1 && !emu::pool.started) emu::want_workers = n;
}

// emu_launch runs kernel `name` over grid x block threads and returns 0, or -1 with a message in err.
// argv[i] holds argument i in its low bytes; kinds[i] is 'p', 'i', 'u' or 'f' and sizes[i] its byte size; both are
// checked against the kernel's C++ signature, which catches a launcher passing arguments in the wrong order.
int emu_launch(const char* name, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
               unsigned smem, const uint64_t* argv, const char* kinds, const int* sizes, int nargs, char* err,
               int errlen) {
  using namespace emu;
  const Kernel* k = find_kernel(name);
  if (!k) {
    snprintf(err, errlen, "emulator: no kernel named %s is registered", name);
    return -1;
  }
  if (nargs != k->nargs) {
    snprintf(err, errlen, "kernel %s takes %d arguments, launch passed %d", name, k->nargs, nargs);
    return -1;
  }
  for (int i = 0; i < nargs; i++)
    if (kinds[i] != k->kinds[i] || sizes[i] != k->sizes[i]) {
      snprintf(err, errlen, "kernel %s argument %d is %c%d in the kernel, launch passed %c%d", name, i, k->kinds[i],
               8 * k->sizes[i], kinds[i], 8 * sizes[i]);
      return -1;
    }
  const long threads = (long)bx * by * bz;
  if (gx == 0 || gy == 0 || gz == 0 || bx == 0 || by == 0 || bz == 0 || threads > 1024 || bz > 64 || gy > 65535 ||
      gz > 65535) {
    snprintf(err, errlen, "kernel %s: invalid launch configuration grid (%u,%u,%u) block (%u,%u,%u)", name, gx, gy, gz,
             bx, by, bz);
    return -1;
  }
  // 227 KiB: the largest opt-in of any GPU (sm_90); launchers keep to the device's own limit (above 48 KiB a GPU
  // needs cuFuncSetAttribute, which cuda/cu.go sets).
  if (smem > 227 * 1024) {
    snprintf(err, errlen, "kernel %s: %u bytes of dynamic shared memory exceed 227 KiB", name, smem);
    return -1;
  }
  void* params[64];
  if (nargs > 64) {
    snprintf(err, errlen, "kernel %s: too many arguments", name);
    return -1;
  }
  for (int i = 0; i < nargs; i++) params[i] = const_cast<uint64_t*>(&argv[i]);

  std::lock_guard<std::mutex> lg(launch_mu);
  Launch L;
  {
    static uint64_t launches = 0;
    std::lock_guard<std::mutex> g(sched_mu);
    schedule_from_env();
    if (sched_mode == SCHED_INVALID) {
      snprintf(err, errlen, "emulator: %s", sched_err.c_str());
      return -1;
    }
    L.sched = sched_mode;
    uint64_t x = sched_seed ^ (++launches * 0x9e3779b97f4a7c15ull);
    L.seed = splitmix64(x);
  }
  L.kernel = k;
  L.grid = dim3(gx, gy, gz);
  L.block = dim3(bx, by, bz);
  L.smem = smem;
  L.params = params;
  {
    std::unique_lock<std::mutex> g(pool.mu);
    if (!pool.started) {
      pool.started = true;
      pool.nthreads = want_workers;
      for (int i = 0; i < pool.nthreads; i++) std::thread(worker_loop).detach();
    }
    pool.job = &L;
    pool.running = pool.nthreads;
    pool.generation++;
    pool.cv_work.notify_all();
    pool.cv_done.wait(g, [] { return pool.running == 0; });
    pool.job = nullptr;
  }
  if (L.failed) {
    snprintf(err, errlen, "%s", L.err.c_str());
    return -1;
  }
  return 0;
}

// emu_alloc returns `bytes` of "device" memory (256-byte aligned, filled with 0xFF so that unwritten floats read as
// NaN). With guard != 0, 256 canary bytes sit on each side, checked by emu_check_guards; under ASan they are also
// poisoned, so any access to them is reported at once.
void* emu_alloc(size_t bytes, int guard) {
  using namespace emu;
  unsigned char* base = static_cast<unsigned char*>(aligned_alloc(kGuard, alloc_total(bytes, guard != 0)));
  if (!base) return nullptr;
  unsigned char* p = base + (guard ? kGuard : 0);
  const size_t tail = alloc_total(bytes, guard != 0) - (p - base) - bytes;
  if (guard) {
    std::memset(base, kCanary, kGuard);
    std::memset(p + bytes, kCanary, tail);
  }
#ifdef EMU_ASAN
  // Poison the canaries and the rounding slack, so that ASan reports any access past `bytes` at once.
  if (guard) ASAN_POISON_MEMORY_REGION(base, kGuard);
  ASAN_POISON_MEMORY_REGION(p + bytes, tail);
#endif
  std::memset(p, 0xff, bytes);
  std::lock_guard<std::mutex> g(alloc_mu);
  allocs[reinterpret_cast<uintptr_t>(p)] = Alloc{bytes, guard != 0};
  return p;
}

// emu_free releases memory from emu_alloc; returns -1 for a pointer it did not hand out.
int emu_free(void* p) {
  using namespace emu;
  Alloc a;
  {
    std::lock_guard<std::mutex> g(alloc_mu);
    auto it = allocs.find(reinterpret_cast<uintptr_t>(p));
    if (it == allocs.end()) return -1;
    a = it->second;
    allocs.erase(it);
  }
  unsigned char* base = static_cast<unsigned char*>(p) - (a.guarded ? kGuard : 0);
#ifdef EMU_ASAN
  ASAN_UNPOISON_MEMORY_REGION(base, alloc_total(a.bytes, a.guarded));
#endif
  free(base);
  return 0;
}

// emu_check_guards verifies the canaries of every guarded allocation; returns the number of damaged ones and
// describes the first in err.
int emu_check_guards(char* err, int errlen) {
  using namespace emu;
  std::lock_guard<std::mutex> g(alloc_mu);
  int bad = 0;
  for (auto& kv : allocs) {
    if (!kv.second.guarded) continue;
    unsigned char* p = reinterpret_cast<unsigned char*>(kv.first);
    const size_t bytes = kv.second.bytes;
    const size_t total = alloc_total(bytes, true);
    unsigned char* base = p - kGuard;
#ifdef EMU_ASAN
    ASAN_UNPOISON_MEMORY_REGION(base, total);
#endif
    bool before = guard_ok(base, kGuard), after = guard_ok(p + bytes, total - kGuard - bytes);
#ifdef EMU_ASAN
    ASAN_POISON_MEMORY_REGION(base, kGuard);
    ASAN_POISON_MEMORY_REGION(p + bytes, total - kGuard - bytes);
#endif
    if (before && after) continue;
    if (bad++ == 0)
      snprintf(err, errlen, "out-of-bounds write %s the %zu-byte allocation at %p", before ? "after" : "before", bytes,
               (void*)p);
  }
  return bad;
}

}  // extern "C"

#endif  // __CUDACC__
