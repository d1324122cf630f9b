// driver.cpp -- an emulated CUDA driver (libcuda.so.1) over the CPU emulator, so that the cuda build (gorgonia.org/cu
// and cuda/cu.go) runs end to end without a GPU. See README.md in this folder for what it checks and how to configure
// it; in short:
//
//   Device     one device, compute capability DDPM_EMU_CC (default 8.0), DDPM_EMU_MEM_MIB MiB (default 16384).
//   Memory     host memory from the emulator's allocator (256-byte aligned, 0xFF-filled, canary bands on both sides),
//              recorded per context: copies, memsets and frees are checked against the table.
//   Modules    PTX text; .version, .target and each .entry's parameters, launch bounds and static shared memory are
//              read (ptx.h) and checked against the device and against the emulator's compiled kernel of that name.
//   Launches   validated like the real driver, then run by the emulator (kernels.cpp) in their stream's order; kernel
//              faults (canary damage, dangling pointer arguments, barrier misuse, __trap) are sticky errors reported
//              by the next synchronising call, as a GPU reports them.
//   Streams    the NULL stream and cuStreamCreate's, events, cuStreamWaitEvent, cuLaunchHostFunc: work runs when
//              issued, or (DDPM_EMU_STREAMS) waits in its stream's queue until a synchronisation or a wait needs it,
//              so that a missing wait changes the result.
//   Others     every other driver function the cu package links answers CUDA_ERROR_NOT_SUPPORTED (stubs.cpp).
//
// Every error is also written to stderr as one line starting "emudriver:".
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#pragma GCC visibility push(default)
#include <cuda.h>
#pragma GCC visibility pop

#include "ptx.h"

// The emulator's C API (kernels/emu/emu_runtime.h, compiled into kernels.cpp of this library).
extern "C" {
void emu_set_workers(int n);
int emu_launch(const char* name, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
               unsigned smem, const uint64_t* argv, const char* kinds, const int* sizes, int nargs, char* err,
               int errlen);
void* emu_alloc(size_t bytes, int guard);
int emu_free(void* p);
int emu_check_guards(char* err, int errlen);
int emu_kernel_signature(const char* name, int* nargs, const char** kinds, const int** sizes);
}

// ---- handles --------------------------------------------------------------------------------------------------------
struct CUfunc_st {
  CUmod_st* mod;
  const ptx::Entry* entry;
  int nargs;  // the emulator kernel's signature (checked against the PTX at load)
  const char* kinds;
  const int* sizes;
  int max_dynamic;  // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES: 48 KiB − static until cuFuncSetAttribute raises it
};

struct CUmod_st {
  CUctx_st* ctx;
  ptx::Module ptx;
  std::vector<std::unique_ptr<CUfunc_st>> fns;  // one per entry, made at load
};

struct CUctx_st {
  std::map<uintptr_t, size_t> allocs;  // base -> bytes
  std::map<uintptr_t, size_t> freed;   // base -> bytes of allocations freed since (for "double free" messages)
  std::set<CUmod_st*> modules;
  CUresult sticky = CUDA_SUCCESS;  // a kernel fault: every later call in the context returns it
  unsigned flags = 0;
  std::map<int, CUstream_st*> streams;  // by id: 0 the NULL (legacy) stream, made on first use; then cuStreamCreate's
  std::set<CUevent_st*> events;
  int next_stream = 1, next_event = 1;
};

// Streams and events (see "streams and events" below). Work on a stream runs in issue order; by default each
// operation runs when it is issued, and DDPM_EMU_STREAMS can hold a stream's work back until something needs it.
struct StreamOp {
  std::function<void()> run;
  std::string what;  // for DDPM_EMU_STREAM_LOG
};

struct CUstream_st {
  CUctx_st* ctx;
  int id;          // 0: the NULL stream
  unsigned flags;  // CU_STREAM_DEFAULT (synchronises with the NULL stream) or CU_STREAM_NON_BLOCKING
  bool deferred;   // its work waits in queue until a synchronisation or a wait needs it (DDPM_EMU_STREAMS)
  long issued = 0, done = 0;  // operations issued and run: operation k (from 1) has run once done >= k
  std::deque<StreamOp> queue;  // issued, not run yet
};

struct CUevent_st {
  CUctx_st* ctx;
  int id;
  unsigned flags;
  int stream = -1;  // the stream of the latest cuEventRecord (-1: never recorded)
  long pos = 0;     // that record's position in it
  std::shared_ptr<double> when;  // host seconds at which that record ran (NaN until then), for cuEventElapsedTime
};

namespace {

std::mutex mu;  // one lock for the whole driver: calls are serialised, as on one stream
bool initialised = false;
int cc_major = 8, cc_minor = 0;
size_t mem_total = size_t(16384) << 20;
size_t mem_used = 0;
bool leaks_fail = false;
std::set<CUmod_st*> modules;   // live modules
std::set<CUfunc_st*> functions;
std::set<CUstream_st*> live_streams;  // of every context, for handle checks
std::set<CUevent_st*> live_events;

// DDPM_EMU_STREAMS: which streams hold their work back until something needs it.
enum StreamMode { kStreamsSync, kDeferStreams, kDeferNull };
StreamMode stream_mode = kStreamsSync;
FILE* stream_log = nullptr;  // DDPM_EMU_STREAM_LOG

// Driver version 12.2 (what the project's documentation was checked against); the newest PTX ISA it reads is 8.2.
const int kDriverVersion = 12020;
const int kMaxPtxMajor = 8, kMaxPtxMinor = 2;
const size_t kMaxShared = 48 << 10;

// The shared memory a block may use after opting in (cuFuncSetAttribute with MAX_DYNAMIC_SHARED_SIZE_BYTES;
// CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN) and an SM holds, as the CUDA C Programming Guide's table
// of compute capabilities gives them: 96 KiB on sm_70, 163 KiB on sm_80, 99 KiB on sm_86/sm_89, 227 KiB on sm_90
// (one KiB of each SM's share is reserved for the system). Static shared memory stays at most 48 KiB everywhere.
size_t max_shared_optin() {
  if (cc_major >= 9) return 227 << 10;
  if (cc_major == 8) return cc_minor == 0 ? 163 << 10 : 99 << 10;
  if (cc_major == 7) return cc_minor == 5 ? 64 << 10 : 96 << 10;
  return kMaxShared;
}
size_t max_shared_per_sm() {
  if (cc_major >= 9) return 228 << 10;
  if (cc_major == 8) return cc_minor == 0 ? 164 << 10 : 100 << 10;
  if (cc_major == 7) return cc_minor == 5 ? 64 << 10 : 96 << 10;
  return 64 << 10;
}

// Fault injection (DDPM_EMU_FAIL): the n-th call of a kind fails once.
struct FailRule {
  std::string kind;    // "alloc", "launch", "sync"
  std::string kernel;  // for launch: a kernel name or "*"
  long n = 0;
  long seen = 0;
  bool fired = false;
};
std::vector<FailRule> fail_rules;

// The current context is per OS thread (a stack, as cuCtxPushCurrent/PopCurrent see it). A pthread key rather than
// thread_local: this library's TLS block is the emulator's static shared memory (see emu.h).
pthread_key_t ctx_key;
std::once_flag ctx_key_once;
std::vector<CUctx_st*>& ctx_stack() {
  std::call_once(ctx_key_once, [] { pthread_key_create(&ctx_key, [](void* p) { delete static_cast<std::vector<CUctx_st*>*>(p); }); });
  auto* s = static_cast<std::vector<CUctx_st*>*>(pthread_getspecific(ctx_key));
  if (!s) {
    s = new std::vector<CUctx_st*>;
    pthread_setspecific(ctx_key, s);
  }
  return *s;
}
std::set<CUctx_st*> contexts;  // live contexts
CUctx_st* current() {
  auto& s = ctx_stack();
  return s.empty() || !contexts.count(s.back()) ? nullptr : s.back();  // destroyed on another thread: none
}

const char* result_name(CUresult r) {
  switch (r) {
    case CUDA_SUCCESS: return "CUDA_SUCCESS";
    case CUDA_ERROR_INVALID_VALUE: return "CUDA_ERROR_INVALID_VALUE";
    case CUDA_ERROR_OUT_OF_MEMORY: return "CUDA_ERROR_OUT_OF_MEMORY";
    case CUDA_ERROR_NOT_INITIALIZED: return "CUDA_ERROR_NOT_INITIALIZED";
    case CUDA_ERROR_INVALID_DEVICE: return "CUDA_ERROR_INVALID_DEVICE";
    case CUDA_ERROR_INVALID_IMAGE: return "CUDA_ERROR_INVALID_IMAGE";
    case CUDA_ERROR_INVALID_CONTEXT: return "CUDA_ERROR_INVALID_CONTEXT";
    case CUDA_ERROR_INVALID_PTX: return "CUDA_ERROR_INVALID_PTX";
    case CUDA_ERROR_UNSUPPORTED_PTX_VERSION: return "CUDA_ERROR_UNSUPPORTED_PTX_VERSION";
    case CUDA_ERROR_FILE_NOT_FOUND: return "CUDA_ERROR_FILE_NOT_FOUND";
    case CUDA_ERROR_INVALID_HANDLE: return "CUDA_ERROR_INVALID_HANDLE";
    case CUDA_ERROR_NOT_FOUND: return "CUDA_ERROR_NOT_FOUND";
    case CUDA_ERROR_ILLEGAL_ADDRESS: return "CUDA_ERROR_ILLEGAL_ADDRESS";
    case CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES: return "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES";
    case CUDA_ERROR_LAUNCH_FAILED: return "CUDA_ERROR_LAUNCH_FAILED";
    case CUDA_ERROR_NOT_SUPPORTED: return "CUDA_ERROR_NOT_SUPPORTED";
    default: return "CUDA_ERROR_?";
  }
}

// fail writes "emudriver: FUNC: message -> CODE" to stderr and returns code.
CUresult fail(CUresult code, const char* func, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
CUresult fail(CUresult code, const char* func, const char* fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fprintf(stderr, "emudriver: %s: %s -> %s (%d)\n", func, msg, result_name(code), (int)code);
  return code;
}

// fault makes code the context's sticky error (a kernel fault, reported by the next synchronising call).
void fault(CUctx_st* c, CUresult code, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
void fault(CUctx_st* c, CUresult code, const char* fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fprintf(stderr, "emudriver: kernel fault: %s -> %s (%d) from now on in this context\n", msg, result_name(code),
          (int)code);
  if (c->sticky == CUDA_SUCCESS) c->sticky = code;
}

bool parse_fail_rules(const char* spec, std::string* err) {
  std::string s(spec);
  size_t start = 0;
  while (start <= s.size()) {
    size_t comma = s.find(',', start);
    if (comma == std::string::npos) comma = s.size();
    std::string item = s.substr(start, comma - start);
    start = comma + 1;
    if (item.empty()) continue;
    FailRule r;
    std::vector<std::string> parts;
    for (size_t p = 0;;) {
      size_t c = item.find(':', p);
      parts.push_back(item.substr(p, c == std::string::npos ? std::string::npos : c - p));
      if (c == std::string::npos) break;
      p = c + 1;
    }
    char* end = nullptr;
    if ((parts[0] == "alloc" || parts[0] == "sync") && parts.size() == 2) {
      r.kind = parts[0];
      r.n = std::strtol(parts[1].c_str(), &end, 10);
    } else if (parts[0] == "launch" && parts.size() == 3 && !parts[1].empty()) {
      r.kind = parts[0];
      r.kernel = parts[1];
      r.n = std::strtol(parts[2].c_str(), &end, 10);
    } else {
      *err = "DDPM_EMU_FAIL item \"" + item + "\": want alloc:N, sync:N or launch:KERNEL:N (KERNEL may be *)";
      return false;
    }
    if (!end || *end != 0 || r.n < 1) {
      *err = "DDPM_EMU_FAIL item \"" + item + "\": N must be a positive integer";
      return false;
    }
    fail_rules.push_back(r);
  }
  return true;
}

// injected says whether this call of kind (for launches, of kernel) is the one a DDPM_EMU_FAIL rule fails.
bool injected(const char* kind, const char* kernel) {
  bool hit = false;
  for (FailRule& r : fail_rules) {
    if (r.kind != kind || r.fired) continue;
    if (r.kind == "launch" && r.kernel != "*" && r.kernel != kernel) continue;
    if (++r.seen == r.n) {
      r.fired = true;
      hit = true;
      fprintf(stderr, "emudriver: DDPM_EMU_FAIL: failing %s call %ld%s%s\n", kind, r.n, kernel ? " of " : "",
              kernel ? kernel : "");
    }
  }
  return hit;
}

const char* device_name() {
  static char name[128];
  const char* model = cc_major >= 9 ? "H100" : cc_major == 8 ? "A100" : cc_major == 7 ? "V100" : "GPU";
  snprintf(name, sizeof name, "Emulated %s sm_%d%d (ddpm emudriver, CPU)", model, cc_major, cc_minor);
  return name;
}

// Common checks of calls that need a context: initialised, a current context, no sticky error.
#define NEED_CONTEXT(func)                                                                            \
  if (!initialised) return fail(CUDA_ERROR_NOT_INITIALIZED, func, "cuInit has not been called");   \
  CUctx_st* ctx = current();                                                                         \
  if (!ctx) return fail(CUDA_ERROR_INVALID_CONTEXT, func, "no current context on this OS thread");   \
  if (ctx->sticky != CUDA_SUCCESS) return ctx->sticky;

size_t rounded(size_t bytes) { return (bytes + 255) / 256 * 256; }

// find_range checks that [p, p+bytes) lies inside one live allocation of c; on failure it describes why in why.
bool find_range(CUctx_st* c, uintptr_t p, size_t bytes, std::string* why) {
  char buf[256];
  auto it = c->allocs.upper_bound(p);
  if (it != c->allocs.begin()) {
    --it;
    const uintptr_t base = it->first;
    const size_t size = it->second;
    if (p < base + size) {
      if (bytes <= base + size - p) return true;
      snprintf(buf, sizeof buf, "[%#lx, +%zu) runs %zu byte(s) past the end of the %zu-byte allocation at %#lx",
               (unsigned long)p, bytes, (size_t)(p + bytes - (base + size)), size, (unsigned long)base);
      *why = buf;
      return false;
    }
  }
  auto f = c->freed.upper_bound(p);
  if (f != c->freed.begin()) {
    --f;
    if (p < f->first + f->second) {
      snprintf(buf, sizeof buf, "%#lx is in the %zu-byte allocation at %#lx, which was freed", (unsigned long)p,
               f->second, (unsigned long)f->first);
      *why = buf;
      return false;
    }
  }
  snprintf(buf, sizeof buf, "%#lx is not in any allocation of this context", (unsigned long)p);
  *why = buf;
  return false;
}

// pointer_ok: a kernel's pointer argument must be null or point into (or one past the end of) a live allocation.
bool pointer_ok(CUctx_st* c, uintptr_t p) {
  if (p == 0) return true;
  auto it = c->allocs.upper_bound(p);
  if (it == c->allocs.begin()) return false;
  --it;
  return p <= it->first + it->second;
}

void free_context_memory(CUctx_st* c) {
  for (auto& kv : c->allocs) {
    emu_free(reinterpret_cast<void*>(kv.first));
    mem_used -= rounded(kv.second);
  }
  c->allocs.clear();
  c->freed.clear();
}

void unload_module(CUmod_st* m) {
  for (auto& f : m->fns) functions.erase(f.get());
  m->ctx->modules.erase(m);
  modules.erase(m);
  delete m;
}

// load_ptx checks and loads a PTX image into the current context.
CUresult load_ptx(const char* func, CUctx_st* ctx, const void* image, CUmod_st** out, std::string* log) {
  const unsigned char* u = static_cast<const unsigned char*>(image);
  if (u[0] == 0x7f && u[1] == 'E' && u[2] == 'L' && u[3] == 'F') {
    *log = "a cubin (ELF) image: the emulated driver loads PTX text only";
    return fail(CUDA_ERROR_NOT_SUPPORTED, func, "%s", log->c_str());
  }
  const uint32_t magic = (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24;
  if (magic == 0xBA55ED50u || magic == 0x466243B1u) {
    *log = "a fatbin image: the emulated driver loads PTX text only";
    return fail(CUDA_ERROR_NOT_SUPPORTED, func, "%s", log->c_str());
  }
  std::unique_ptr<CUmod_st> m(new CUmod_st);
  m->ctx = ctx;
  std::string err;
  if (!ptx::parse(static_cast<const char*>(image), &m->ptx, &err)) {
    *log = "ptx: " + err;
    return fail(CUDA_ERROR_INVALID_PTX, func, "%s", log->c_str());
  }
  const ptx::Module& p = m->ptx;
  if (p.version_major > kMaxPtxMajor || (p.version_major == kMaxPtxMajor && p.version_minor > kMaxPtxMinor)) {
    char b[256];
    snprintf(b, sizeof b, "PTX ISA %d.%d is newer than this driver's %d.%d (CUDA %d.%d)", p.version_major,
             p.version_minor, kMaxPtxMajor, kMaxPtxMinor, kDriverVersion / 1000, kDriverVersion % 1000 / 10);
    *log = b;
    return fail(CUDA_ERROR_UNSUPPORTED_PTX_VERSION, func, "%s", b);
  }
  if (p.target_sm > 10 * cc_major + cc_minor) {
    char b[256];
    snprintf(b, sizeof b, "ptxas: .target sm_%d is newer than the device (compute capability %d.%d)", p.target_sm,
             cc_major, cc_minor);
    *log = b;
    return fail(CUDA_ERROR_INVALID_PTX, func, "%s", b);
  }
  for (const ptx::Entry& e : p.entries) {
    char b[1024];
    if (e.static_shared > kMaxShared) {
      snprintf(b, sizeof b, "ptxas: entry %s uses %zu bytes of static shared memory, more than the %zu allowed",
               e.name.c_str(), e.static_shared, kMaxShared);
      *log = b;
      return fail(CUDA_ERROR_INVALID_PTX, func, "%s", b);
    }
    std::unique_ptr<CUfunc_st> f(new CUfunc_st{m.get(), &e, 0, nullptr, nullptr, (int)(kMaxShared - e.static_shared)});
    if (emu_kernel_signature(e.name.c_str(), &f->nargs, &f->kinds, &f->sizes) != 0) {
      snprintf(b, sizeof b, "entry %s has no kernel of that name compiled into the emulator (kernels/*.cu)",
               e.name.c_str());
      *log = b;
      return fail(CUDA_ERROR_INVALID_IMAGE, func, "%s", b);
    }
    // The PTX (what the GPU runs) and the emulator's kernel (what runs here) must take the same parameters.
    bool same = f->nargs == (int)e.params.size();
    for (int i = 0; same && i < f->nargs; i++)
      same = f->sizes[i] == e.params[i].size && (f->kinds[i] == 'f') == e.params[i].is_float;
    if (!same) {
      std::string ps, ks;
      for (const ptx::Param& q : e.params) ps += (ps.empty() ? "" : ",") + q.type;
      for (int i = 0; i < f->nargs; i++)
        ks += (ks.empty() ? "" : ",") + std::string(1, f->kinds[i]) + std::to_string(8 * f->sizes[i]);
      snprintf(b, sizeof b, "entry %s takes (%s) in the PTX but (%s) in the emulator's kernel: stale PTX? (make ptx)",
               e.name.c_str(), ps.c_str(), ks.c_str());
      *log = b;
      return fail(CUDA_ERROR_INVALID_IMAGE, func, "%s", b);
    }
    m->fns.push_back(std::move(f));
  }
  for (auto& f : m->fns) functions.insert(f.get());
  ctx->modules.insert(m.get());
  modules.insert(m.get());
  *out = m.release();
  return CUDA_SUCCESS;
}

// ---- streams and events: the machinery ------------------------------------------------------------------------------
// Each stream is a queue. An operation (kernel launch, cuLaunchHostFunc, event record, cuStreamWaitEvent) is issued
// to its stream and runs at once, unless the stream is deferred (DDPM_EMU_STREAMS) or already has work waiting;
// then it runs when something needs it: a synchronisation (cuCtxSynchronize, cuStreamSynchronize,
// cuEventSynchronize), a wait on an event recorded after it by a stream that runs, a synchronous copy or memset
// (which waits for the NULL stream and the blocking streams, as on the legacy NULL stream), cuMemFree, cuModuleUnload,
// cuStreamDestroy or cuCtxDestroy (which run everything). The NULL stream and the blocking streams (CU_STREAM_DEFAULT)
// wait for each other's earlier work, as the legacy NULL stream does; a CU_STREAM_NON_BLOCKING stream waits only
// for the events it is told to.
double now_seconds() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

void slog(const char* verb, const CUstream_st* s, const std::string& what) {
  if (stream_log) fprintf(stream_log, "%s s%d %s\n", verb, s->id, what.c_str());
}

CUstream_st* null_stream(CUctx_st* c) {
  auto it = c->streams.find(0);
  if (it != c->streams.end()) return it->second;
  CUstream_st* s = new CUstream_st{c, 0, CU_STREAM_DEFAULT, stream_mode == kDeferNull};
  c->streams[0] = s;
  live_streams.insert(s);
  return s;
}

// force runs s's queued operations up to position pos (those issued before it stay queued).
void force(CUstream_st* s, long pos) {
  while (s->done < pos && !s->queue.empty()) {
    StreamOp op = std::move(s->queue.front());
    s->queue.pop_front();
    slog("run", s, op.what);
    op.run();
    s->done++;
  }
}

// force_id is force by stream id; a destroyed stream ran all its work before it went.
void force_id(CUctx_st* c, int id, long pos) {
  auto it = c->streams.find(id);
  if (it != c->streams.end()) force(it->second, pos);
}

// force_all runs every queued operation of the context.
void force_all(CUctx_st* c) {
  for (bool again = true; again;) {
    again = false;
    for (auto& kv : c->streams)
      if (!kv.second->queue.empty()) {
        force(kv.second, kv.second->issued);
        again = true;
      }
  }
}

// sync_legacy is what a synchronous copy or memset waits for: the NULL stream's work and the blocking streams'.
void sync_legacy(CUctx_st* c) {
  for (auto& kv : c->streams)
    if (kv.first == 0 || !(kv.second->flags & CU_STREAM_NON_BLOCKING)) force(kv.second, kv.second->issued);
}

// issue queues run on s (or runs it now, see above); what names it in the stream log.
void issue(CUstream_st* s, const std::string& what, std::function<void()> run) {
  CUctx_st* c = s->ctx;
  std::vector<std::pair<int, long>> deps;  // the legacy NULL stream's implicit synchronisation
  if (s->id == 0) {
    for (auto& kv : c->streams)
      if (kv.first != 0 && !(kv.second->flags & CU_STREAM_NON_BLOCKING)) deps.push_back({kv.first, kv.second->issued});
  } else if (!(s->flags & CU_STREAM_NON_BLOCKING)) {
    CUstream_st* n = null_stream(c);
    deps.push_back({0, n->issued});
  }
  std::function<void()> op = deps.empty() ? std::move(run) : [c, deps, run = std::move(run)] {
    for (auto& d : deps) force_id(c, d.first, d.second);
    run();
  };
  s->issued++;
  slog("issue", s, what);
  if (!s->deferred && s->queue.empty()) {
    op();
    s->done++;
    return;
  }
  s->queue.push_back({std::move(op), what});
}

// resolve_stream maps a stream handle of the current context (NULL, CU_STREAM_LEGACY and CU_STREAM_PER_THREAD are
// the NULL stream) to its stream, or says why not.
CUresult resolve_stream(const char* func, CUctx_st* ctx, CUstream h, CUstream_st** out) {
  if (h == nullptr || h == CU_STREAM_LEGACY || h == CU_STREAM_PER_THREAD) {
    *out = null_stream(ctx);
    return CUDA_SUCCESS;
  }
  if (!live_streams.count(h)) return fail(CUDA_ERROR_INVALID_HANDLE, func, "stream %p is not a live stream", (void*)h);
  if (h->ctx != ctx) return fail(CUDA_ERROR_INVALID_CONTEXT, func, "stream %p belongs to another context", (void*)h);
  *out = h;
  return CUDA_SUCCESS;
}

CUresult resolve_event(const char* func, CUctx_st* ctx, CUevent e) {
  if (!live_events.count(e)) return fail(CUDA_ERROR_INVALID_HANDLE, func, "event %p is not a live event", (void*)e);
  if (e->ctx != ctx) return fail(CUDA_ERROR_INVALID_CONTEXT, func, "event %p belongs to another context", (void*)e);
  return CUDA_SUCCESS;
}

bool event_done(const CUevent_st* e) {
  if (e->stream < 0) return true;
  auto it = e->ctx->streams.find(e->stream);
  return it == e->ctx->streams.end() || it->second->done >= e->pos;
}

// destroy_streams ends a context's streams and events (after force_all).
void destroy_streams(CUctx_st* c) {
  for (auto& kv : c->streams) {
    live_streams.erase(kv.second);
    delete kv.second;
  }
  c->streams.clear();
  for (CUevent_st* e : c->events) {
    live_events.erase(e);
    delete e;
  }
  c->events.clear();
}

// run_kernel runs a launch that cuLaunchKernel checked, on the emulator; a fault becomes the context's sticky error
// (after one, the context's later kernels do not run).
void run_kernel(CUctx_st* ctx, CUfunc_st* f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                unsigned bz, unsigned smem, const std::vector<uint64_t>& argv) {
  if (ctx->sticky != CUDA_SUCCESS) return;
  const char* name = f->entry->name.c_str();
  const int n = (int)argv.size();
  // A pointer argument that points nowhere would make the emulator write into freed host memory; on a GPU the
  // kernel faults when it dereferences it.
  for (int i = 0; i < n; i++)
    if (f->kinds[i] == 'p' && !pointer_ok(ctx, (uintptr_t)argv[i])) {
      std::string why;
      find_range(ctx, (uintptr_t)argv[i], 1, &why);
      fault(ctx, CUDA_ERROR_ILLEGAL_ADDRESS, "%s: pointer argument %d: %s (the kernel was not run)", name, i,
            why.c_str());
      return;
    }
  char err[1024];
  err[0] = 0;
  if (emu_launch(name, gx, gy, gz, bx, by, bz, smem, argv.data(), f->kinds, f->sizes, n, err, sizeof err) != 0) {
    fault(ctx, CUDA_ERROR_LAUNCH_FAILED, "%s", err);
    return;
  }
  if (emu_check_guards(err, sizeof err) != 0)
    fault(ctx, CUDA_ERROR_ILLEGAL_ADDRESS, "%s grid (%u,%u,%u) block (%u,%u,%u): %s", name, gx, gy, gz, bx, by, bz, err);
}

// A synchronous copy or memset: after the NULL stream's and the blocking streams' work (whose faults it reports).
#define SYNC_LEGACY(ctx)                              \
  sync_legacy(ctx);                                   \
  if ((ctx)->sticky != CUDA_SUCCESS) return (ctx)->sticky;

#define CHECK_RANGE(func, what, p, n)                                                           \
  {                                                                                             \
    std::string why;                                                                            \
    if (!find_range(ctx, (p), (n), &why))                                                       \
      return fail(CUDA_ERROR_INVALID_VALUE, func, "%s of %zu bytes: %s", what, (size_t)(n), why.c_str()); \
  }

template <class T>
CUresult memset_n(const char* func, CUdeviceptr dst, T v, size_t n) {
  NEED_CONTEXT(func);
  SYNC_LEGACY(ctx);
  if (dst % sizeof(T) != 0)
    return fail(CUDA_ERROR_INVALID_VALUE, func, "%#lx is not %zu-byte aligned", (unsigned long)dst, sizeof(T));
  if (n == 0) return CUDA_SUCCESS;
  CHECK_RANGE(func, "destination", dst, n * sizeof(T));
  T* p = reinterpret_cast<T*>(dst);
  for (size_t i = 0; i < n; i++) p[i] = v;
  return CUDA_SUCCESS;
}

int env_int(const char* name, int def) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : def;
}

}  // namespace

// ---- initialisation and device ------------------------------------------------------------------------------------
extern "C" {

CUresult cuInit(unsigned int flags) {
  std::lock_guard<std::mutex> g(mu);
  if (flags != 0) return fail(CUDA_ERROR_INVALID_VALUE, "cuInit", "flags %u, want 0", flags);
  if (initialised) return CUDA_SUCCESS;
  if (const char* cc = std::getenv("DDPM_EMU_CC")) {
    int ma = 0, mi = 0;
    char tail = 0;
    if (std::sscanf(cc, "%d.%d%c", &ma, &mi, &tail) != 2 || ma < 3 || ma > 12 || mi < 0 || mi > 9)
      return fail(CUDA_ERROR_INVALID_VALUE, "cuInit", "DDPM_EMU_CC=%s: want a compute capability such as 7.0, 8.0, 9.0",
                  cc);
    cc_major = ma;
    cc_minor = mi;
  }
  if (const char* m = std::getenv("DDPM_EMU_MEM_MIB")) {
    char* end = nullptr;
    long long mib = std::strtoll(m, &end, 10);
    if (!*m || *end != 0 || mib < 1 || mib > (1ll << 24))
      return fail(CUDA_ERROR_INVALID_VALUE, "cuInit", "DDPM_EMU_MEM_MIB=%s: want a size in MiB (1 to 16777216)", m);
    mem_total = size_t(mib) << 20;
  }
  if (const char* l = std::getenv("DDPM_EMU_LEAKS")) {
    if (std::strcmp(l, "fail") == 0) {
      leaks_fail = true;
    } else if (std::strcmp(l, "report") != 0) {
      return fail(CUDA_ERROR_INVALID_VALUE, "cuInit", "DDPM_EMU_LEAKS=%s: want report or fail", l);
    }
  }
  if (const char* f = std::getenv("DDPM_EMU_FAIL")) {
    std::string err;
    if (!parse_fail_rules(f, &err)) return fail(CUDA_ERROR_INVALID_VALUE, "cuInit", "%s", err.c_str());
  }
  if (const char* m = std::getenv("DDPM_EMU_STREAMS")) {
    if (std::strcmp(m, "sync") == 0) {
      stream_mode = kStreamsSync;
    } else if (std::strcmp(m, "defer-streams") == 0) {
      stream_mode = kDeferStreams;
    } else if (std::strcmp(m, "defer-null") == 0) {
      stream_mode = kDeferNull;
    } else {
      return fail(CUDA_ERROR_INVALID_VALUE, "cuInit", "DDPM_EMU_STREAMS=%s: want sync, defer-streams or defer-null", m);
    }
  }
  if (const char* l = std::getenv("DDPM_EMU_STREAM_LOG")) {
    std::string path(l);
    size_t at = path.find("%p");
    if (at != std::string::npos) path.replace(at, 2, std::to_string((long)getpid()));
    if (!(stream_log = std::fopen(path.c_str(), "w")))
      return fail(CUDA_ERROR_INVALID_VALUE, "cuInit", "DDPM_EMU_STREAM_LOG=%s: %s", l, std::strerror(errno));
    setvbuf(stream_log, nullptr, _IOLBF, 0);
  }
  int workers = env_int("DDPM_EMU_WORKERS", (int)std::max(1u, std::thread::hardware_concurrency()));
  emu_set_workers(std::max(1, workers));
  initialised = true;
  fprintf(stderr, "emudriver: emulated CUDA driver %d.%d: %s, %zu MiB, %d emulator worker(s)\n", kDriverVersion / 1000,
          kDriverVersion % 1000 / 10, device_name(), mem_total >> 20, std::max(1, workers));
  return CUDA_SUCCESS;
}

CUresult cuDriverGetVersion(int* v) {
  if (!v) return fail(CUDA_ERROR_INVALID_VALUE, "cuDriverGetVersion", "null pointer");
  *v = kDriverVersion;
  return CUDA_SUCCESS;
}

#define NEED_INIT(func) \
  if (!initialised) return fail(CUDA_ERROR_NOT_INITIALIZED, func, "cuInit has not been called");
#define NEED_DEVICE(func, dev) \
  if ((dev) != 0) return fail(CUDA_ERROR_INVALID_DEVICE, func, "device %d (there is one device, 0)", (int)(dev));

CUresult cuDeviceGetCount(int* count) {
  std::lock_guard<std::mutex> g(mu);
  NEED_INIT("cuDeviceGetCount");
  if (!count) return fail(CUDA_ERROR_INVALID_VALUE, "cuDeviceGetCount", "null pointer");
  *count = 1;
  return CUDA_SUCCESS;
}

CUresult cuDeviceGet(CUdevice* dev, int ordinal) {
  std::lock_guard<std::mutex> g(mu);
  NEED_INIT("cuDeviceGet");
  if (!dev) return fail(CUDA_ERROR_INVALID_VALUE, "cuDeviceGet", "null pointer");
  NEED_DEVICE("cuDeviceGet", ordinal);
  *dev = 0;
  return CUDA_SUCCESS;
}

CUresult cuDeviceGetName(char* name, int len, CUdevice dev) {
  std::lock_guard<std::mutex> g(mu);
  NEED_INIT("cuDeviceGetName");
  NEED_DEVICE("cuDeviceGetName", dev);
  if (!name || len <= 0) return fail(CUDA_ERROR_INVALID_VALUE, "cuDeviceGetName", "null or empty buffer");
  snprintf(name, len, "%s", device_name());
  return CUDA_SUCCESS;
}

CUresult cuDeviceGetUuid(CUuuid* uuid, CUdevice dev) {
  std::lock_guard<std::mutex> g(mu);
  NEED_INIT("cuDeviceGetUuid");
  NEED_DEVICE("cuDeviceGetUuid", dev);
  if (!uuid) return fail(CUDA_ERROR_INVALID_VALUE, "cuDeviceGetUuid", "null pointer");
  const char id[16] = {'d', 'd', 'p', 'm', '-', 'e', 'm', 'u', 'd', 'r', 'i', 'v', 'e', 'r', 0, 1};
  std::memcpy(uuid->bytes, id, 16);
  return CUDA_SUCCESS;
}

CUresult cuDeviceTotalMem(size_t* bytes, CUdevice dev) {
  std::lock_guard<std::mutex> g(mu);
  NEED_INIT("cuDeviceTotalMem");
  NEED_DEVICE("cuDeviceTotalMem", dev);
  if (!bytes) return fail(CUDA_ERROR_INVALID_VALUE, "cuDeviceTotalMem", "null pointer");
  *bytes = mem_total;
  return CUDA_SUCCESS;
}

CUresult cuDeviceGetAttribute(int* pi, CUdevice_attribute attrib, CUdevice dev) {
  std::lock_guard<std::mutex> g(mu);
  NEED_INIT("cuDeviceGetAttribute");
  NEED_DEVICE("cuDeviceGetAttribute", dev);
  if (!pi) return fail(CUDA_ERROR_INVALID_VALUE, "cuDeviceGetAttribute", "null pointer");
  const int sms = cc_major >= 9 ? 132 : cc_major == 8 ? 108 : 80;
  switch (attrib) {
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *pi = cc_major; break;
    case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *pi = cc_minor; break;
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *pi = 1024; break;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X: *pi = 1024; break;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y: *pi = 1024; break;
    case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z: *pi = 64; break;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X: *pi = 2147483647; break;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y: *pi = 65535; break;
    case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z: *pi = 65535; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: *pi = (int)kMaxShared; break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: *pi = (int)max_shared_optin(); break;
    case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR: *pi = (int)max_shared_per_sm(); break;
    case CU_DEVICE_ATTRIBUTE_WARP_SIZE: *pi = 32; break;
    case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *pi = sms; break;
    case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR: *pi = 2048; break;
    case CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY: *pi = 65536; break;
    case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK: *pi = 65536; break;
    case CU_DEVICE_ATTRIBUTE_CLOCK_RATE: *pi = 1410000; break;
    case CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING: *pi = 1; break;
    case CU_DEVICE_ATTRIBUTE_CONCURRENT_KERNELS: *pi = 1; break;
    case CU_DEVICE_ATTRIBUTE_INTEGRATED: *pi = 0; break;
    case CU_DEVICE_ATTRIBUTE_PCI_BUS_ID: *pi = 0; break;
    case CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID: *pi = 0; break;
    default:
      return fail(CUDA_ERROR_INVALID_VALUE, "cuDeviceGetAttribute", "attribute %d is not emulated", (int)attrib);
  }
  return CUDA_SUCCESS;
}

// ---- contexts -------------------------------------------------------------------------------------------------------
CUresult cuCtxCreate(CUcontext* pctx, unsigned int flags, CUdevice dev) {
  std::lock_guard<std::mutex> g(mu);
  NEED_INIT("cuCtxCreate_v2");
  NEED_DEVICE("cuCtxCreate_v2", dev);
  if (!pctx) return fail(CUDA_ERROR_INVALID_VALUE, "cuCtxCreate_v2", "null pointer");
  CUctx_st* c = new CUctx_st;
  c->flags = flags;
  contexts.insert(c);
  ctx_stack().push_back(c);
  *pctx = c;
  return CUDA_SUCCESS;
}

CUresult cuCtxDestroy(CUcontext c) {
  std::lock_guard<std::mutex> g(mu);
  NEED_INIT("cuCtxDestroy_v2");
  if (!contexts.count(c)) return fail(CUDA_ERROR_INVALID_CONTEXT, "cuCtxDestroy_v2", "%p is not a live context", (void*)c);
  CUresult r = CUDA_SUCCESS;
  if (!c->allocs.empty()) {
    size_t bytes = 0;
    for (auto& kv : c->allocs) bytes += kv.second;
    std::string list;
    int shown = 0;
    for (auto& kv : c->allocs) {
      if (shown++ == 4) {
        list += ", ...";
        break;
      }
      char b[64];
      snprintf(b, sizeof b, "%s%#lx (%zu bytes)", list.empty() ? "" : ", ", (unsigned long)kv.first, kv.second);
      list += b;
    }
    fprintf(stderr, "emudriver: cuCtxDestroy_v2: leak: %zu allocation(s), %zu bytes never freed: %s\n",
            c->allocs.size(), bytes, list.c_str());
    if (leaks_fail)
      r = fail(CUDA_ERROR_INVALID_VALUE, "cuCtxDestroy_v2", "%zu allocation(s) leaked (DDPM_EMU_LEAKS=fail)",
               c->allocs.size());
  }
  force_all(c);  // queued work runs before the context goes (as a GPU finishes it)
  destroy_streams(c);
  free_context_memory(c);
  while (!c->modules.empty()) unload_module(*c->modules.begin());
  contexts.erase(c);
  auto& s = ctx_stack();
  s.erase(std::remove(s.begin(), s.end(), c), s.end());
  delete c;
  return r;
}

CUresult cuCtxGetCurrent(CUcontext* pctx) {
  std::lock_guard<std::mutex> g(mu);
  NEED_INIT("cuCtxGetCurrent");
  if (!pctx) return fail(CUDA_ERROR_INVALID_VALUE, "cuCtxGetCurrent", "null pointer");
  *pctx = current();
  return CUDA_SUCCESS;
}

CUresult cuCtxSetCurrent(CUcontext c) {
  std::lock_guard<std::mutex> g(mu);
  NEED_INIT("cuCtxSetCurrent");
  auto& s = ctx_stack();
  if (!c) {
    if (!s.empty()) s.pop_back();
    return CUDA_SUCCESS;
  }
  if (!contexts.count(c)) return fail(CUDA_ERROR_INVALID_CONTEXT, "cuCtxSetCurrent", "%p is not a live context", (void*)c);
  if (s.empty()) {
    s.push_back(c);
  } else {
    s.back() = c;
  }
  return CUDA_SUCCESS;
}

CUresult cuCtxPushCurrent(CUcontext c) {
  std::lock_guard<std::mutex> g(mu);
  NEED_INIT("cuCtxPushCurrent_v2");
  if (!contexts.count(c))
    return fail(CUDA_ERROR_INVALID_CONTEXT, "cuCtxPushCurrent_v2", "%p is not a live context", (void*)c);
  ctx_stack().push_back(c);
  return CUDA_SUCCESS;
}

CUresult cuCtxPopCurrent(CUcontext* pctx) {
  std::lock_guard<std::mutex> g(mu);
  NEED_INIT("cuCtxPopCurrent_v2");
  auto& s = ctx_stack();
  if (s.empty()) return fail(CUDA_ERROR_INVALID_CONTEXT, "cuCtxPopCurrent_v2", "no current context");
  if (pctx) *pctx = s.back();
  s.pop_back();
  return CUDA_SUCCESS;
}

CUresult cuCtxGetDevice(CUdevice* dev) {
  std::lock_guard<std::mutex> g(mu);
  NEED_INIT("cuCtxGetDevice");
  if (!current()) return fail(CUDA_ERROR_INVALID_CONTEXT, "cuCtxGetDevice", "no current context on this OS thread");
  if (!dev) return fail(CUDA_ERROR_INVALID_VALUE, "cuCtxGetDevice", "null pointer");
  *dev = 0;
  return CUDA_SUCCESS;
}

CUresult cuCtxSynchronize(void) {
  std::lock_guard<std::mutex> g(mu);
  NEED_CONTEXT("cuCtxSynchronize");
  force_all(ctx);
  if (ctx->sticky != CUDA_SUCCESS) return ctx->sticky;
  if (injected("sync", nullptr)) {
    fault(ctx, CUDA_ERROR_LAUNCH_FAILED, "injected by DDPM_EMU_FAIL at cuCtxSynchronize");
    return ctx->sticky;
  }
  return CUDA_SUCCESS;
}

// cuStreamSynchronize of the NULL stream is cuCtxSynchronize (DDPM_EMU_FAIL's sync:N counts it); of another stream,
// it runs that stream's work (and what it waits for).
CUresult cuStreamSynchronize(CUstream h) {
  if (h == nullptr || h == CU_STREAM_LEGACY || h == CU_STREAM_PER_THREAD) return cuCtxSynchronize();
  std::lock_guard<std::mutex> g(mu);
  NEED_CONTEXT("cuStreamSynchronize");
  CUstream_st* s;
  if (CUresult r = resolve_stream("cuStreamSynchronize", ctx, h, &s)) return r;
  force(s, s->issued);
  return ctx->sticky;
}

// ---- memory ---------------------------------------------------------------------------------------------------------
CUresult cuMemGetInfo(size_t* free_, size_t* total) {
  std::lock_guard<std::mutex> g(mu);
  NEED_CONTEXT("cuMemGetInfo_v2");
  if (!free_ || !total) return fail(CUDA_ERROR_INVALID_VALUE, "cuMemGetInfo_v2", "null pointer");
  *total = mem_total;
  *free_ = mem_total - mem_used;
  return CUDA_SUCCESS;
}

CUresult cuMemAlloc(CUdeviceptr* dptr, size_t bytes) {
  std::lock_guard<std::mutex> g(mu);
  NEED_CONTEXT("cuMemAlloc_v2");
  if (!dptr) return fail(CUDA_ERROR_INVALID_VALUE, "cuMemAlloc_v2", "null pointer");
  if (bytes == 0) return fail(CUDA_ERROR_INVALID_VALUE, "cuMemAlloc_v2", "0 bytes");
  if (injected("alloc", nullptr))
    return fail(CUDA_ERROR_OUT_OF_MEMORY, "cuMemAlloc_v2", "%zu bytes: injected by DDPM_EMU_FAIL", bytes);
  if (rounded(bytes) > mem_total - mem_used)
    return fail(CUDA_ERROR_OUT_OF_MEMORY, "cuMemAlloc_v2", "%zu bytes with %zu of %zu free", bytes,
                mem_total - mem_used, mem_total);
  void* p = emu_alloc(bytes, 1);
  if (!p) return fail(CUDA_ERROR_OUT_OF_MEMORY, "cuMemAlloc_v2", "%zu bytes: the host is out of memory", bytes);
  const uintptr_t u = reinterpret_cast<uintptr_t>(p);
  // the address may be reused: forget freed allocations it overlaps
  for (auto it = ctx->freed.begin(); it != ctx->freed.end();)
    it = (it->first < u + bytes && u < it->first + it->second) ? ctx->freed.erase(it) : std::next(it);
  ctx->allocs[u] = bytes;
  mem_used += rounded(bytes);
  *dptr = u;
  return CUDA_SUCCESS;
}

CUresult cuMemFree(CUdeviceptr p) {
  std::lock_guard<std::mutex> g(mu);
  NEED_CONTEXT("cuMemFree_v2");
  if (p == 0) return CUDA_SUCCESS;
  force_all(ctx);  // queued work may use it
  auto it = ctx->allocs.find(p);
  if (it == ctx->allocs.end()) {
    if (ctx->freed.count(p)) return fail(CUDA_ERROR_INVALID_VALUE, "cuMemFree_v2", "double free of %#lx", (unsigned long)p);
    std::string why;
    if (find_range(ctx, p, 1, &why))
      return fail(CUDA_ERROR_INVALID_VALUE, "cuMemFree_v2", "%#lx is inside an allocation, not its start",
                  (unsigned long)p);
    return fail(CUDA_ERROR_INVALID_VALUE, "cuMemFree_v2", "%s", why.c_str());
  }
  emu_free(reinterpret_cast<void*>(p));
  mem_used -= rounded(it->second);
  ctx->freed[p] = it->second;
  ctx->allocs.erase(it);
  return CUDA_SUCCESS;
}

CUresult cuMemGetAddressRange(CUdeviceptr* base, size_t* size, CUdeviceptr p) {
  std::lock_guard<std::mutex> g(mu);
  NEED_CONTEXT("cuMemGetAddressRange_v2");
  std::string why;
  if (!find_range(ctx, p, 1, &why)) return fail(CUDA_ERROR_NOT_FOUND, "cuMemGetAddressRange_v2", "%s", why.c_str());
  auto it = --ctx->allocs.upper_bound(p);
  if (base) *base = it->first;
  if (size) *size = it->second;
  return CUDA_SUCCESS;
}

CUresult cuMemcpyHtoD(CUdeviceptr dst, const void* src, size_t n) {
  std::lock_guard<std::mutex> g(mu);
  NEED_CONTEXT("cuMemcpyHtoD_v2");
  SYNC_LEGACY(ctx);
  if (n == 0) return CUDA_SUCCESS;
  if (!src) return fail(CUDA_ERROR_INVALID_VALUE, "cuMemcpyHtoD_v2", "null host pointer");
  CHECK_RANGE("cuMemcpyHtoD_v2", "destination", dst, n);
  std::memcpy(reinterpret_cast<void*>(dst), src, n);
  return CUDA_SUCCESS;
}

CUresult cuMemcpyDtoH(void* dst, CUdeviceptr src, size_t n) {
  std::lock_guard<std::mutex> g(mu);
  NEED_CONTEXT("cuMemcpyDtoH_v2");
  SYNC_LEGACY(ctx);
  if (n == 0) return CUDA_SUCCESS;
  if (!dst) return fail(CUDA_ERROR_INVALID_VALUE, "cuMemcpyDtoH_v2", "null host pointer");
  CHECK_RANGE("cuMemcpyDtoH_v2", "source", src, n);
  std::memcpy(dst, reinterpret_cast<const void*>(src), n);
  return CUDA_SUCCESS;
}

CUresult cuMemcpyDtoD(CUdeviceptr dst, CUdeviceptr src, size_t n) {
  std::lock_guard<std::mutex> g(mu);
  NEED_CONTEXT("cuMemcpyDtoD_v2");
  SYNC_LEGACY(ctx);
  if (n == 0) return CUDA_SUCCESS;
  CHECK_RANGE("cuMemcpyDtoD_v2", "source", src, n);
  CHECK_RANGE("cuMemcpyDtoD_v2", "destination", dst, n);
  std::memmove(reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(src), n);
  return CUDA_SUCCESS;
}

// cuMemcpy (unified addressing): an address inside a device allocation is device memory, any other is host memory.
CUresult cuMemcpy(CUdeviceptr dst, CUdeviceptr src, size_t n) {
  std::lock_guard<std::mutex> g(mu);
  NEED_CONTEXT("cuMemcpy");
  SYNC_LEGACY(ctx);
  if (n == 0) return CUDA_SUCCESS;
  std::string why;
  if (find_range(ctx, dst, 1, &why)) CHECK_RANGE("cuMemcpy", "destination", dst, n);
  if (find_range(ctx, src, 1, &why)) CHECK_RANGE("cuMemcpy", "source", src, n);
  if (!dst || !src) return fail(CUDA_ERROR_INVALID_VALUE, "cuMemcpy", "null pointer");
  std::memmove(reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(src), n);
  return CUDA_SUCCESS;
}

CUresult cuMemsetD8(CUdeviceptr dst, unsigned char v, size_t n) {
  std::lock_guard<std::mutex> g(mu);
  return memset_n<unsigned char>("cuMemsetD8_v2", dst, v, n);
}
CUresult cuMemsetD16(CUdeviceptr dst, unsigned short v, size_t n) {
  std::lock_guard<std::mutex> g(mu);
  return memset_n<unsigned short>("cuMemsetD16_v2", dst, v, n);
}
CUresult cuMemsetD32(CUdeviceptr dst, unsigned int v, size_t n) {
  std::lock_guard<std::mutex> g(mu);
  return memset_n<unsigned int>("cuMemsetD32_v2", dst, v, n);
}

// ---- modules --------------------------------------------------------------------------------------------------------
CUresult cuModuleLoadData(CUmodule* mod, const void* image) {
  std::lock_guard<std::mutex> g(mu);
  NEED_CONTEXT("cuModuleLoadData");
  if (!mod || !image) return fail(CUDA_ERROR_INVALID_VALUE, "cuModuleLoadData", "null pointer");
  std::string log;
  return load_ptx("cuModuleLoadData", ctx, image, mod, &log);
}

// cuModuleLoadDataEx honours CU_JIT_ERROR_LOG_BUFFER(_SIZE_BYTES); other JIT options are accepted and ignored.
CUresult cuModuleLoadDataEx(CUmodule* mod, const void* image, unsigned int n, CUjit_option* options, void** values) {
  std::lock_guard<std::mutex> g(mu);
  NEED_CONTEXT("cuModuleLoadDataEx");
  if (!mod || !image || (n > 0 && (!options || !values)))
    return fail(CUDA_ERROR_INVALID_VALUE, "cuModuleLoadDataEx", "null pointer");
  std::string log;
  CUresult r = load_ptx("cuModuleLoadDataEx", ctx, image, mod, &log);
  char* buf = nullptr;
  size_t size = 0;
  for (unsigned i = 0; i < n; i++) {
    if (options[i] == CU_JIT_ERROR_LOG_BUFFER) buf = static_cast<char*>(values[i]);
    if (options[i] == CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES) size = (size_t)(uintptr_t)values[i];
  }
  if (buf && size > 0) snprintf(buf, size, "%s", r == CUDA_SUCCESS ? "" : log.c_str());
  return r;
}

CUresult cuModuleLoad(CUmodule* mod, const char* fname) {
  if (!fname) return fail(CUDA_ERROR_INVALID_VALUE, "cuModuleLoad", "null file name");
  FILE* f = std::fopen(fname, "rb");
  if (!f) return fail(CUDA_ERROR_FILE_NOT_FOUND, "cuModuleLoad", "%s: %s", fname, std::strerror(errno));
  std::string data;
  char buf[65536];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) data.append(buf, n);
  std::fclose(f);
  return cuModuleLoadData(mod, data.c_str());
}

CUresult cuModuleUnload(CUmodule m) {
  std::lock_guard<std::mutex> g(mu);
  NEED_INIT("cuModuleUnload");
  if (!modules.count(m)) return fail(CUDA_ERROR_INVALID_HANDLE, "cuModuleUnload", "%p is not a loaded module", (void*)m);
  force_all(m->ctx);  // queued launches of its kernels
  unload_module(m);
  return CUDA_SUCCESS;
}

CUresult cuModuleGetFunction(CUfunction* fn, CUmodule m, const char* name) {
  std::lock_guard<std::mutex> g(mu);
  NEED_CONTEXT("cuModuleGetFunction");
  if (!fn || !name) return fail(CUDA_ERROR_INVALID_VALUE, "cuModuleGetFunction", "null pointer");
  if (!modules.count(m))
    return fail(CUDA_ERROR_INVALID_HANDLE, "cuModuleGetFunction", "%p is not a loaded module", (void*)m);
  for (auto& f : m->fns)
    if (f->entry->name == name) {
      *fn = f.get();
      return CUDA_SUCCESS;
    }
  return fail(CUDA_ERROR_NOT_FOUND, "cuModuleGetFunction", "the module has no kernel named %s", name);
}

CUresult cuFuncGetAttribute(int* pi, CUfunction_attribute attrib, CUfunction f) {
  std::lock_guard<std::mutex> g(mu);
  NEED_CONTEXT("cuFuncGetAttribute");
  if (!pi) return fail(CUDA_ERROR_INVALID_VALUE, "cuFuncGetAttribute", "null pointer");
  if (!functions.count(f)) return fail(CUDA_ERROR_INVALID_HANDLE, "cuFuncGetAttribute", "%p is not a function", (void*)f);
  const ptx::Entry& e = *f->entry;
  switch (attrib) {
    case CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *pi = e.maxntid > 0 ? (int)std::min(e.maxntid, 1024L) : 1024; break;
    case CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES: *pi = (int)e.static_shared; break;
    case CU_FUNC_ATTRIBUTE_CONST_SIZE_BYTES: *pi = 0; break;
    case CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES: *pi = 0; break;
    case CU_FUNC_ATTRIBUTE_NUM_REGS: *pi = 32; break;
    case CU_FUNC_ATTRIBUTE_PTX_VERSION: *pi = f->mod->ptx.version_major * 10 + f->mod->ptx.version_minor; break;
    case CU_FUNC_ATTRIBUTE_BINARY_VERSION: *pi = 10 * cc_major + cc_minor; break;
    case CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES: *pi = f->max_dynamic; break;
    default: return fail(CUDA_ERROR_INVALID_VALUE, "cuFuncGetAttribute", "attribute %d is not emulated", (int)attrib);
  }
  return CUDA_SUCCESS;
}

// cuFuncSetAttribute: only MAX_DYNAMIC_SHARED_SIZE_BYTES, the opt-in to more than 48 KiB of dynamic shared memory,
// up to the device's MAX_SHARED_MEMORY_PER_BLOCK_OPTIN less the function's static shared memory; a larger or
// negative value is CUDA_ERROR_INVALID_VALUE, as from the real driver, and leaves the limit unchanged. The other
// settable attribute (PREFERRED_SHARED_MEMORY_CARVEOUT, a hint) is accepted in its range and ignored; read-only
// attributes are CUDA_ERROR_INVALID_VALUE.
CUresult cuFuncSetAttribute(CUfunction f, CUfunction_attribute attrib, int value) {
  std::lock_guard<std::mutex> g(mu);
  const char* fn = "cuFuncSetAttribute";
  NEED_CONTEXT(fn);
  if (!functions.count(f)) return fail(CUDA_ERROR_INVALID_HANDLE, fn, "%p is not a function", (void*)f);
  const ptx::Entry& e = *f->entry;
  switch (attrib) {
    case CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES: {
      const long limit = (long)max_shared_optin() - (long)e.static_shared;
      if (value < 0 || value > limit)
        return fail(CUDA_ERROR_INVALID_VALUE, fn,
                    "%s: MAX_DYNAMIC_SHARED_SIZE_BYTES %d is outside [0, %ld] (%zu opt-in bytes per block on sm_%d%d, "
                    "%zu of them static)",
                    e.name.c_str(), value, limit, max_shared_optin(), cc_major, cc_minor, e.static_shared);
      f->max_dynamic = value;
      return CUDA_SUCCESS;
    }
    case CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT:
      if (value < -1 || value > 100)
        return fail(CUDA_ERROR_INVALID_VALUE, fn, "%s: PREFERRED_SHARED_MEMORY_CARVEOUT %d is outside [-1, 100]",
                    e.name.c_str(), value);
      return CUDA_SUCCESS;
    default:
      return fail(CUDA_ERROR_INVALID_VALUE, fn, "%s: attribute %d cannot be set", e.name.c_str(), (int)attrib);
  }
}

// ---- launches -------------------------------------------------------------------------------------------------------
CUresult cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned smem, CUstream stream, void** kernelParams, void** extra) {
  std::lock_guard<std::mutex> g(mu);
  const char* fn = "cuLaunchKernel";
  NEED_CONTEXT(fn);
  if (!functions.count(f)) return fail(CUDA_ERROR_INVALID_HANDLE, fn, "%p is not a function of a loaded module", (void*)f);
  if (f->mod->ctx != ctx) return fail(CUDA_ERROR_INVALID_CONTEXT, fn, "the function belongs to another context");
  const ptx::Entry& e = *f->entry;
  const char* name = e.name.c_str();
  CUstream_st* st;
  if (CUresult r = resolve_stream(fn, ctx, stream, &st)) return r;
  // Configuration.
  const unsigned long threads = (unsigned long)bx * by * bz;
  if (gx == 0 || gy == 0 || gz == 0 || bx == 0 || by == 0 || bz == 0 || gx > 2147483647u || gy > 65535 || gz > 65535 ||
      bx > 1024 || by > 1024 || bz > 64 || threads > 1024)
    return fail(CUDA_ERROR_INVALID_VALUE, fn, "%s: invalid configuration grid (%u,%u,%u) block (%u,%u,%u)", name, gx, gy,
                gz, bx, by, bz);
  if (e.maxntid > 0 && (long)threads > e.maxntid)
    return fail(CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES, fn, "%s: block (%u,%u,%u) has %lu threads, more than its .maxntid %ld",
                name, bx, by, bz, threads, e.maxntid);
  if (e.reqntid[0] > 0 && (bx != e.reqntid[0] || by != e.reqntid[1] || bz != e.reqntid[2]))
    return fail(CUDA_ERROR_INVALID_VALUE, fn, "%s: block (%u,%u,%u), but its .reqntid is (%ld,%ld,%ld)", name, bx, by, bz,
                e.reqntid[0], e.reqntid[1], e.reqntid[2]);
  if ((long)smem > (long)f->max_dynamic)
    return fail(CUDA_ERROR_INVALID_VALUE, fn,
                "%s: %zu bytes of static + %u of dynamic shared memory exceed %zu (the function's "
                "MAX_DYNAMIC_SHARED_SIZE_BYTES %d; cuFuncSetAttribute raises it up to %zu − static)",
                name, e.static_shared, smem, e.static_shared + f->max_dynamic, f->max_dynamic, max_shared_optin());
  // Parameters: read exactly each PTX parameter's size, from kernelParams[i] or from the extra buffer.
  const int n = (int)e.params.size();
  if (kernelParams && extra) return fail(CUDA_ERROR_INVALID_VALUE, fn, "%s: both kernelParams and extra are given", name);
  const char* buffer = nullptr;
  if (extra) {
    size_t* size = nullptr;
    for (int i = 0; extra[i] != CU_LAUNCH_PARAM_END; i += 2) {
      if (extra[i] == CU_LAUNCH_PARAM_BUFFER_POINTER) {
        buffer = static_cast<const char*>(extra[i + 1]);
      } else if (extra[i] == CU_LAUNCH_PARAM_BUFFER_SIZE) {
        size = static_cast<size_t*>(extra[i + 1]);
      } else {
        return fail(CUDA_ERROR_INVALID_VALUE, fn, "%s: unknown extra option %p", name, extra[i]);
      }
    }
    if (!buffer || !size) return fail(CUDA_ERROR_INVALID_VALUE, fn, "%s: extra needs a buffer pointer and size", name);
    if (*size != e.param_bytes)
      return fail(CUDA_ERROR_INVALID_VALUE, fn, "%s: a %zu-byte parameter buffer, but its %d parameter(s) take %zu bytes",
                  name, *size, n, e.param_bytes);
  } else if (n > 0 && !kernelParams) {
    return fail(CUDA_ERROR_INVALID_VALUE, fn, "%s takes %d parameter(s), but kernelParams is NULL", name, n);
  }
  std::vector<uint64_t> argv(n, 0);
  size_t off = 0;
  for (int i = 0; i < n; i++) {
    const ptx::Param& p = e.params[i];
    if (p.size > 8) return fail(CUDA_ERROR_NOT_SUPPORTED, fn, "%s: parameter %d is %d bytes (at most 8 are emulated)", name, i, p.size);
    off = (off + p.align - 1) / p.align * p.align;
    const void* src = buffer ? buffer + off : kernelParams[i];
    off += p.size;
    if (!src) return fail(CUDA_ERROR_INVALID_VALUE, fn, "%s: kernelParams[%d] is NULL", name, i);
    std::memcpy(&argv[i], src, p.size);
  }
  if (injected("launch", name)) {
    fault(ctx, CUDA_ERROR_ILLEGAL_ADDRESS, "%s: injected by DDPM_EMU_FAIL", name);
    return CUDA_SUCCESS;
  }
  issue(st, std::string("launch ") + name, [=, argv = std::move(argv)] { run_kernel(ctx, f, gx, gy, gz, bx, by, bz, smem, argv); });
  return CUDA_SUCCESS;
}

// ---- streams and events ---------------------------------------------------------------------------------------------
CUresult cuStreamCreate(CUstream* ph, unsigned int flags) {
  std::lock_guard<std::mutex> g(mu);
  NEED_CONTEXT("cuStreamCreate");
  if (!ph) return fail(CUDA_ERROR_INVALID_VALUE, "cuStreamCreate", "null pointer");
  if (flags != CU_STREAM_DEFAULT && flags != CU_STREAM_NON_BLOCKING)
    return fail(CUDA_ERROR_INVALID_VALUE, "cuStreamCreate", "flags %#x (want CU_STREAM_DEFAULT or CU_STREAM_NON_BLOCKING)", flags);
  null_stream(ctx);
  CUstream_st* s = new CUstream_st{ctx, ctx->next_stream++, flags, stream_mode == kDeferStreams};
  ctx->streams[s->id] = s;
  live_streams.insert(s);
  *ph = s;
  return CUDA_SUCCESS;
}

// cuStreamDestroy runs the stream's queued work first (the real driver lets it finish after returning).
CUresult cuStreamDestroy(CUstream h) {
  std::lock_guard<std::mutex> g(mu);
  NEED_CONTEXT("cuStreamDestroy_v2");
  if (h == nullptr || h == CU_STREAM_LEGACY || h == CU_STREAM_PER_THREAD)
    return fail(CUDA_ERROR_INVALID_HANDLE, "cuStreamDestroy_v2", "the NULL stream cannot be destroyed");
  CUstream_st* s;
  if (CUresult r = resolve_stream("cuStreamDestroy_v2", ctx, h, &s)) return r;
  force(s, s->issued);
  ctx->streams.erase(s->id);
  live_streams.erase(s);
  delete s;
  return CUDA_SUCCESS;
}

CUresult cuStreamGetFlags(CUstream h, unsigned int* flags) {
  std::lock_guard<std::mutex> g(mu);
  NEED_CONTEXT("cuStreamGetFlags");
  if (!flags) return fail(CUDA_ERROR_INVALID_VALUE, "cuStreamGetFlags", "null pointer");
  CUstream_st* s;
  if (CUresult r = resolve_stream("cuStreamGetFlags", ctx, h, &s)) return r;
  *flags = s->flags;
  return CUDA_SUCCESS;
}

// cuStreamQuery: CUDA_ERROR_NOT_READY while work of the stream is queued (nothing runs it but a synchronisation).
CUresult cuStreamQuery(CUstream h) {
  std::lock_guard<std::mutex> g(mu);
  NEED_CONTEXT("cuStreamQuery");
  CUstream_st* s;
  if (CUresult r = resolve_stream("cuStreamQuery", ctx, h, &s)) return r;
  return s->done < s->issued ? CUDA_ERROR_NOT_READY : CUDA_SUCCESS;
}

// cuStreamWaitEvent: the stream's later work waits for the event's latest record as it is now (a later record
// does not move the wait).
CUresult cuStreamWaitEvent(CUstream h, CUevent e, unsigned int flags) {
  std::lock_guard<std::mutex> g(mu);
  NEED_CONTEXT("cuStreamWaitEvent");
  if (flags != 0) return fail(CUDA_ERROR_INVALID_VALUE, "cuStreamWaitEvent", "flags %#x, want 0", flags);
  CUstream_st* s;
  if (CUresult r = resolve_stream("cuStreamWaitEvent", ctx, h, &s)) return r;
  if (CUresult r = resolve_event("cuStreamWaitEvent", ctx, e)) return r;
  const int sid = e->stream;
  const long pos = e->pos;
  char what[96];
  snprintf(what, sizeof what, "wait e%d (s%d:%ld)", e->id, sid, pos);
  issue(s, what, [ctx, sid, pos] { force_id(ctx, sid, pos); });
  return CUDA_SUCCESS;
}

CUresult cuEventCreate(CUevent* pe, unsigned int flags) {
  std::lock_guard<std::mutex> g(mu);
  NEED_CONTEXT("cuEventCreate");
  if (!pe) return fail(CUDA_ERROR_INVALID_VALUE, "cuEventCreate", "null pointer");
  if (flags & ~unsigned(CU_EVENT_BLOCKING_SYNC | CU_EVENT_DISABLE_TIMING | CU_EVENT_INTERPROCESS))
    return fail(CUDA_ERROR_INVALID_VALUE, "cuEventCreate", "flags %#x", flags);
  if ((flags & CU_EVENT_INTERPROCESS) && !(flags & CU_EVENT_DISABLE_TIMING))
    return fail(CUDA_ERROR_INVALID_VALUE, "cuEventCreate", "CU_EVENT_INTERPROCESS needs CU_EVENT_DISABLE_TIMING");
  CUevent_st* e = new CUevent_st{ctx, ctx->next_event++, flags};
  ctx->events.insert(e);
  live_events.insert(e);
  *pe = e;
  return CUDA_SUCCESS;
}

CUresult cuEventDestroy(CUevent e) {
  std::lock_guard<std::mutex> g(mu);
  NEED_CONTEXT("cuEventDestroy_v2");
  if (CUresult r = resolve_event("cuEventDestroy_v2", ctx, e)) return r;
  ctx->events.erase(e);
  live_events.erase(e);
  delete e;
  return CUDA_SUCCESS;
}

CUresult cuEventRecord(CUevent e, CUstream h) {
  std::lock_guard<std::mutex> g(mu);
  NEED_CONTEXT("cuEventRecord");
  CUstream_st* s;
  if (CUresult r = resolve_stream("cuEventRecord", ctx, h, &s)) return r;
  if (CUresult r = resolve_event("cuEventRecord", ctx, e)) return r;
  e->stream = s->id;
  e->pos = s->issued + 1;  // the record's own position
  auto when = std::make_shared<double>(NAN);
  e->when = when;
  issue(s, "record e" + std::to_string(e->id), [when] { *when = now_seconds(); });
  return CUDA_SUCCESS;
}

// cuEventQuery: CUDA_ERROR_NOT_READY while the latest record is queued.
CUresult cuEventQuery(CUevent e) {
  std::lock_guard<std::mutex> g(mu);
  NEED_CONTEXT("cuEventQuery");
  if (CUresult r = resolve_event("cuEventQuery", ctx, e)) return r;
  return event_done(e) ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY;
}

CUresult cuEventSynchronize(CUevent e) {
  std::lock_guard<std::mutex> g(mu);
  NEED_CONTEXT("cuEventSynchronize");
  if (CUresult r = resolve_event("cuEventSynchronize", ctx, e)) return r;
  if (e->stream >= 0) force_id(ctx, e->stream, e->pos);
  return ctx->sticky;
}

CUresult cuEventElapsedTime(float* ms, CUevent start, CUevent end) {
  std::lock_guard<std::mutex> g(mu);
  NEED_CONTEXT("cuEventElapsedTime");
  if (!ms) return fail(CUDA_ERROR_INVALID_VALUE, "cuEventElapsedTime", "null pointer");
  if (CUresult r = resolve_event("cuEventElapsedTime", ctx, start)) return r;
  if (CUresult r = resolve_event("cuEventElapsedTime", ctx, end)) return r;
  if ((start->flags | end->flags) & CU_EVENT_DISABLE_TIMING)
    return fail(CUDA_ERROR_INVALID_HANDLE, "cuEventElapsedTime", "an event made with CU_EVENT_DISABLE_TIMING");
  if (!start->when || !end->when)
    return fail(CUDA_ERROR_INVALID_HANDLE, "cuEventElapsedTime", "an event that was never recorded");
  if (!event_done(start) || !event_done(end)) return CUDA_ERROR_NOT_READY;
  *ms = float(1e3 * (*end->when - *start->when));
  return CUDA_SUCCESS;
}

// cuLaunchHostFunc queues fn(data) on the stream (it must not call the driver, as on a GPU; the test double of
// NCCL queues its collectives this way).
CUresult cuLaunchHostFunc(CUstream h, CUhostFn fn, void* data) {
  std::lock_guard<std::mutex> g(mu);
  NEED_CONTEXT("cuLaunchHostFunc");
  if (!fn) return fail(CUDA_ERROR_INVALID_VALUE, "cuLaunchHostFunc", "null function");
  CUstream_st* s;
  if (CUresult r = resolve_stream("cuLaunchHostFunc", ctx, h, &s)) return r;
  issue(s, "host", [fn, data] { fn(data); });
  return CUDA_SUCCESS;
}

}  // extern "C"
