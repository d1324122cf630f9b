// testdata/check.c -- calls the CUDA driver API directly to test the emulated driver's checks (driver_test.go builds it against
// cuda.h and the driver stub, and runs it with LD_LIBRARY_PATH pointing at bin/emudriver). `check CASE` runs one
// case and exits 0, or prints what differed and exits 1. The kernels are the emulator's self-test kernels
// (kernels/emu/selftest.cu), declared here in hand-written PTX whose bodies are never read.
#define _GNU_SOURCE
#include <cuda.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static int failures = 0;

#define EXPECT(call, want)                                                                                  \
  do {                                                                                                      \
    CUresult got_ = (call);                                                                                 \
    if (got_ != (want)) {                                                                                   \
      fprintf(stderr, "check.c:%d: %s returned %d, want %d (%s)\n", __LINE__, #call, (int)got_, (int)(want), \
              #want);                                                                                       \
      failures++;                                                                                           \
    }                                                                                                       \
  } while (0)
#define OK(call) EXPECT(call, CUDA_SUCCESS)
#define TRUE(cond, ...)                                          \
  do {                                                           \
    if (!(cond)) {                                               \
      fprintf(stderr, "check.c:%d: %s: ", __LINE__, #cond);      \
      fprintf(stderr, __VA_ARGS__);                              \
      fprintf(stderr, "\n");                                     \
      failures++;                                                \
    }                                                            \
  } while (0)

// ptx returns a module of the given .target and .version holding the entries in body.
static char* ptx(const char* target, const char* version, const char* body) {
  static char buf[4][8192];
  static int k = 0;
  char* b = buf[k++ % 4];
  snprintf(b, sizeof buf[0], ".version %s\n.target %s\n.address_size 64\n\n%s", version, target, body);
  return b;
}

// The self-test kernels as nvcc declares them (kernels/emu/selftest.cu).
static const char* kEntries =
    "// .globl emu_test_dynsmem_sum\n"
    ".visible .entry emu_test_dynsmem_sum(\n"
    "\t.param .u64 emu_test_dynsmem_sum_param_0,\n"
    "\t.param .u64 emu_test_dynsmem_sum_param_1\n"
    ")\n{\n\t.reg .b32 %r<2>;\n\tret;\n}\n"
    ".visible .entry emu_test_oob_write(\n"
    "\t.param .u64 emu_test_oob_write_param_0,\n"
    "\t.param .u32 emu_test_oob_write_param_1\n"
    ")\n.maxntid 64, 1, 1\n{\n\tret;\n}\n"
    ".visible .entry emu_test_switch_cost(\n"
    "\t.param .u32 emu_test_switch_cost_param_0,\n"
    "\t.param .u64 emu_test_switch_cost_param_1\n"
    ")\n{\n\t.shared .align 4 .b8 big[40960];\n\tret;\n}\n"
    ".visible .entry emu_test_barrier_diverge(\n"
    "\t.param .u64 emu_test_barrier_diverge_param_0\n"
    ")\n{\n\tret;\n}\n"
    ".visible .entry emu_test_missing_sync(\n"
    "\t.param .u64 emu_test_missing_sync_param_0,\n"
    "\t.param .u64 emu_test_missing_sync_param_1\n"
    ")\n{\n\tret;\n}\n";

static int cc_env(void) {  // DDPM_EMU_CC as major*10+minor (the driver's default: 8.0)
  const char* v = getenv("DDPM_EMU_CC");
  int ma = 8, mi = 0;
  if (v) sscanf(v, "%d.%d", &ma, &mi);
  return 10 * ma + mi;
}

static CUcontext setup(void) {
  CUdevice dev;
  CUcontext ctx;
  if (cuInit(0) != CUDA_SUCCESS || cuDeviceGet(&dev, 0) != CUDA_SUCCESS || cuCtxCreate(&ctx, 0, dev) != CUDA_SUCCESS) {
    fprintf(stderr, "check.c: cannot set up a context\n");
    exit(1);
  }
  return ctx;
}

static CUmodule load(void) {
  CUmodule m;
  CUresult r = cuModuleLoadData(&m, ptx("sm_70", "7.8", kEntries));
  if (r != CUDA_SUCCESS) {
    fprintf(stderr, "check.c: cannot load the test module: %d\n", (int)r);
    exit(1);
  }
  return m;
}

static CUfunction fn(CUmodule m, const char* name) {
  CUfunction f;
  CUresult r = cuModuleGetFunction(&f, m, name);
  if (r != CUDA_SUCCESS) {
    fprintf(stderr, "check.c: no function %s: %d\n", name, (int)r);
    exit(1);
  }
  return f;
}

static void case_noinit(void) {
  CUdevice dev;
  int n;
  EXPECT(cuDeviceGet(&dev, 0), CUDA_ERROR_NOT_INITIALIZED);
  EXPECT(cuDeviceGetCount(&n), CUDA_ERROR_NOT_INITIALIZED);
  OK(cuInit(0));
  OK(cuDeviceGetCount(&n));
  TRUE(n == 1, "%d devices", n);
}

static void case_device(void) {
  OK(cuInit(0));
  EXPECT(cuInit(1), CUDA_ERROR_INVALID_VALUE);
  int n = 0, major = 0, minor = 0, v = 0;
  OK(cuDeviceGetCount(&n));
  TRUE(n == 1, "%d devices, want 1", n);
  CUdevice dev;
  OK(cuDeviceGet(&dev, 0));
  EXPECT(cuDeviceGet(&dev, 1), CUDA_ERROR_INVALID_DEVICE);
  OK(cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev));
  OK(cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev));
  TRUE(10 * major + minor == cc_env(), "compute capability %d.%d, want DDPM_EMU_CC %d", major, minor, cc_env());
  OK(cuDeviceGetAttribute(&v, CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK, dev));
  TRUE(v == 1024, "max threads per block %d", v);
  char name[256];
  OK(cuDeviceGetName(name, sizeof name, dev));
  TRUE(strstr(name, "emudriver") != NULL, "device name %s", name);
  size_t total = 0, want = (size_t)(getenv("DDPM_EMU_MEM_MIB") ? atol(getenv("DDPM_EMU_MEM_MIB")) : 16384) << 20;
  OK(cuDeviceTotalMem(&total, dev));
  TRUE(total == want, "total memory %zu, want %zu", total, want);
  OK(cuDriverGetVersion(&v));
  TRUE(v >= 11080, "driver version %d", v);
  CUdeviceptr p;
  EXPECT(cuMemAlloc(&p, 64), CUDA_ERROR_INVALID_CONTEXT);  // no context yet
  EXPECT(cuCtxSynchronize(), CUDA_ERROR_INVALID_CONTEXT);
}

static void case_context(void) {
  CUcontext ctx = setup(), cur = NULL;
  OK(cuCtxGetCurrent(&cur));
  TRUE(cur == ctx, "current %p, want %p", (void*)cur, (void*)ctx);
  OK(cuCtxPopCurrent(&cur));
  TRUE(cur == ctx, "popped %p", (void*)cur);
  CUdeviceptr p;
  EXPECT(cuMemAlloc(&p, 64), CUDA_ERROR_INVALID_CONTEXT);
  OK(cuCtxPushCurrent(ctx));
  OK(cuMemAlloc(&p, 64));
  OK(cuMemFree(p));
  OK(cuCtxDestroy(ctx));
  EXPECT(cuCtxDestroy(ctx), CUDA_ERROR_INVALID_CONTEXT);
  EXPECT(cuMemAlloc(&p, 64), CUDA_ERROR_INVALID_CONTEXT);  // destroyed: no longer current
}

static void case_meminfo(void) {
  CUcontext ctx = setup();
  size_t free0, total, free1;
  OK(cuMemGetInfo(&free0, &total));
  TRUE(free0 == total, "free %zu of %zu in a fresh context", free0, total);
  CUdeviceptr p, q;
  OK(cuMemAlloc(&p, 1 << 20));
  OK(cuMemGetInfo(&free1, &total));
  TRUE(free0 - free1 == 1 << 20, "a 1 MiB allocation took %zu bytes", free0 - free1);
  EXPECT(cuMemAlloc(&q, free1 + 1), CUDA_ERROR_OUT_OF_MEMORY);
  EXPECT(cuMemAlloc(&q, 0), CUDA_ERROR_INVALID_VALUE);
  OK(cuMemFree(p));
  OK(cuMemGetInfo(&free1, &total));
  TRUE(free1 == free0, "free %zu after freeing, want %zu", free1, free0);
  OK(cuCtxDestroy(ctx));
}

// sum of in[b*64 .. b*64+63] for in[i] = i
static void case_launch(void) {
  CUcontext ctx = setup();
  CUmodule m = load();
  CUfunction f = fn(m, "emu_test_dynsmem_sum");
  float in[128], out[2] = {0, 0};
  for (int i = 0; i < 128; i++) in[i] = (float)i;
  CUdeviceptr din, dout;
  OK(cuMemAlloc(&din, sizeof in));
  OK(cuMemAlloc(&dout, sizeof out));
  OK(cuMemcpyHtoD(din, in, sizeof in));
  // cu's layout: each argument an 8-byte copy
  uint64_t a0 = din, a1 = dout;
  void* params[] = {&a0, &a1};
  OK(cuLaunchKernel(f, 2, 1, 1, 64, 1, 1, 64 * sizeof(float), NULL, params, NULL));
  OK(cuCtxSynchronize());
  OK(cuMemcpyDtoH(out, dout, sizeof out));
  TRUE(out[0] == 2016 && out[1] == 6112, "sums %g %g, want 2016 6112", out[0], out[1]);
  // the same through an extra buffer
  OK(cuMemsetD32(dout, 0, 2));
  uint64_t buf[2] = {din, dout};
  size_t size = sizeof buf;
  void* extra[] = {CU_LAUNCH_PARAM_BUFFER_POINTER, buf, CU_LAUNCH_PARAM_BUFFER_SIZE, &size, CU_LAUNCH_PARAM_END};
  OK(cuLaunchKernel(f, 2, 1, 1, 64, 1, 1, 64 * sizeof(float), NULL, NULL, extra));
  OK(cuMemcpyDtoH(out, dout, sizeof out));
  TRUE(out[0] == 2016 && out[1] == 6112, "sums %g %g through extra, want 2016 6112", out[0], out[1]);
  // a parameter buffer laid out by alignment: switch_cost(int rounds, int* out) is {u32 @0, u64 @8}, 16 bytes
  CUfunction sc = fn(m, "emu_test_switch_cost");
  unsigned char sbuf[16] = {0};
  int rounds = 5, res = 0;
  memcpy(sbuf, &rounds, 4);
  memcpy(sbuf + 8, &a1, 8);
  size = 16;
  void* extra2[] = {CU_LAUNCH_PARAM_BUFFER_POINTER, sbuf, CU_LAUNCH_PARAM_BUFFER_SIZE, &size, CU_LAUNCH_PARAM_END};
  OK(cuLaunchKernel(sc, 1, 1, 1, 32, 1, 1, 0, NULL, NULL, extra2));
  OK(cuMemcpyDtoH(&res, dout, 4));
  TRUE(res == 10, "switch_cost wrote %d, want 0+1+2+3+4", res);
  OK(cuModuleUnload(m));
  EXPECT(cuLaunchKernel(f, 2, 1, 1, 64, 1, 1, 256, NULL, params, NULL), CUDA_ERROR_INVALID_HANDLE);
  EXPECT(cuModuleUnload(m), CUDA_ERROR_INVALID_HANDLE);
  OK(cuMemFree(din));
  OK(cuMemFree(dout));
  OK(cuCtxDestroy(ctx));
}

// The driver reads exactly the PTX size of each parameter: a 4-byte int at the very end of a readable page, before
// an unreadable one, must not make it fault.
static void case_params_exact(void) {
  CUcontext ctx = setup();
  CUfunction f = fn(load(), "emu_test_oob_write");
  const long page = sysconf(_SC_PAGESIZE);
  char* mem = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  TRUE(mem != MAP_FAILED, "mmap");
  mprotect(mem + page, page, PROT_NONE);
  int32_t* n = (int32_t*)(mem + page - 4);
  *n = 7;  // writes out[0..7]
  CUdeviceptr dout;
  OK(cuMemAlloc(&dout, 8 * sizeof(float)));
  OK(cuMemsetD32(dout, 0, 8));
  uint64_t a0 = dout;
  void* params[] = {&a0, n};
  OK(cuLaunchKernel(f, 1, 1, 1, 8, 1, 1, 0, NULL, params, NULL));
  OK(cuCtxSynchronize());
  float out[8];
  OK(cuMemcpyDtoH(out, dout, sizeof out));
  for (int i = 0; i < 8; i++) TRUE(out[i] == 1.0f, "out[%d] = %g, want 1", i, out[i]);
  OK(cuMemFree(dout));
  OK(cuCtxDestroy(ctx));
}

static void case_param_count(void) {
  CUcontext ctx = setup();
  CUmodule m = load();
  CUfunction f = fn(m, "emu_test_switch_cost");  // (int rounds, int* out): 16-byte buffer
  CUdeviceptr d;
  OK(cuMemAlloc(&d, 64));
  unsigned char buf[24] = {0};
  size_t sizes[] = {4, 8, 12, 24};  // one parameter missing, packed without padding, one too many
  for (int i = 0; i < 4; i++) {
    size_t size = sizes[i];
    void* extra[] = {CU_LAUNCH_PARAM_BUFFER_POINTER, buf, CU_LAUNCH_PARAM_BUFFER_SIZE, &size, CU_LAUNCH_PARAM_END};
    EXPECT(cuLaunchKernel(f, 1, 1, 1, 32, 1, 1, 0, NULL, NULL, extra), CUDA_ERROR_INVALID_VALUE);
  }
  uint64_t a0 = 1, a1 = d;
  void* params[] = {&a0, &a1};
  size_t size = 16;
  void* extra[] = {CU_LAUNCH_PARAM_BUFFER_POINTER, buf, CU_LAUNCH_PARAM_BUFFER_SIZE, &size, CU_LAUNCH_PARAM_END};
  EXPECT(cuLaunchKernel(f, 1, 1, 1, 32, 1, 1, 0, NULL, NULL, NULL), CUDA_ERROR_INVALID_VALUE);      // none
  EXPECT(cuLaunchKernel(f, 1, 1, 1, 32, 1, 1, 0, NULL, params, extra), CUDA_ERROR_INVALID_VALUE);  // both
  void* holes[] = {&a0, NULL};
  EXPECT(cuLaunchKernel(f, 1, 1, 1, 32, 1, 1, 0, NULL, holes, NULL), CUDA_ERROR_INVALID_VALUE);
  OK(cuLaunchKernel(f, 1, 1, 1, 32, 1, 1, 0, NULL, params, NULL));
  OK(cuCtxSynchronize());
  // PTX that disagrees with the emulator's kernel: a parameter too many, a 32-bit pointer, a float for a pointer.
  CUmodule bad;
  const char* mismatched[] = {
      ".visible .entry emu_test_dynsmem_sum(.param .u64 a, .param .u64 b, .param .u32 c)\n{\n\tret;\n}\n",
      ".visible .entry emu_test_dynsmem_sum(.param .u64 a, .param .u32 b)\n{\n\tret;\n}\n",
      ".visible .entry emu_test_dynsmem_sum(.param .u64 a, .param .f64 b)\n{\n\tret;\n}\n",
  };
  for (int i = 0; i < 3; i++) EXPECT(cuModuleLoadData(&bad, ptx("sm_70", "7.8", mismatched[i])), CUDA_ERROR_INVALID_IMAGE);
  OK(cuMemFree(d));
  OK(cuCtxDestroy(ctx));
}

static void case_block_limits(void) {
  CUcontext ctx = setup();
  CUmodule m = load();
  CUfunction f = fn(m, "emu_test_dynsmem_sum");
  CUfunction bounded = fn(m, "emu_test_oob_write");  // .maxntid 64
  CUdeviceptr d;
  OK(cuMemAlloc(&d, 1 << 16));
  uint64_t a0 = d, a1 = d;
  int32_t n = 0;
  void* params[] = {&a0, &a1};
  void* bparams[] = {&a0, &n};
  EXPECT(cuLaunchKernel(f, 1, 1, 1, 1025, 1, 1, 0, NULL, params, NULL), CUDA_ERROR_INVALID_VALUE);
  EXPECT(cuLaunchKernel(f, 1, 1, 1, 32, 32, 2, 0, NULL, params, NULL), CUDA_ERROR_INVALID_VALUE);
  EXPECT(cuLaunchKernel(f, 1, 1, 1, 1, 1, 65, 0, NULL, params, NULL), CUDA_ERROR_INVALID_VALUE);
  EXPECT(cuLaunchKernel(f, 1, 65536, 1, 32, 1, 1, 0, NULL, params, NULL), CUDA_ERROR_INVALID_VALUE);
  EXPECT(cuLaunchKernel(f, 0, 1, 1, 32, 1, 1, 0, NULL, params, NULL), CUDA_ERROR_INVALID_VALUE);
  EXPECT(cuLaunchKernel(bounded, 1, 1, 1, 128, 1, 1, 0, NULL, bparams, NULL), CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES);
  EXPECT(cuLaunchKernel(bounded, 1, 1, 1, 8, 3, 3, 0, NULL, bparams, NULL), CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES);
  OK(cuLaunchKernel(bounded, 1, 1, 1, 64, 1, 1, 0, NULL, bparams, NULL));
  int v = 0;
  OK(cuFuncGetAttribute(&v, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, bounded));
  TRUE(v == 64, "MAX_THREADS_PER_BLOCK %d, want .maxntid 64", v);
  OK(cuCtxSynchronize());
  OK(cuMemFree(d));
  OK(cuCtxDestroy(ctx));
}

static void case_shared_limits(void) {
  CUcontext ctx = setup();
  CUmodule m = load();
  CUfunction f = fn(m, "emu_test_dynsmem_sum");
  CUfunction big = fn(m, "emu_test_switch_cost");  // 40960 bytes of static shared memory
  CUdeviceptr d;
  OK(cuMemAlloc(&d, 1 << 16));
  OK(cuMemsetD32(d, 0, 1 << 14));
  uint64_t a0 = d, a1 = d + 4096;
  void* params[] = {&a0, &a1};
  int32_t rounds = 1;
  void* bparams[] = {&rounds, &a1};
  EXPECT(cuLaunchKernel(f, 1, 1, 1, 32, 1, 1, 48 * 1024 + 1, NULL, params, NULL), CUDA_ERROR_INVALID_VALUE);
  OK(cuLaunchKernel(f, 1, 1, 1, 32, 1, 1, 48 * 1024, NULL, params, NULL));
  EXPECT(cuLaunchKernel(big, 1, 1, 1, 32, 1, 1, 8192 + 4, NULL, bparams, NULL), CUDA_ERROR_INVALID_VALUE);
  OK(cuLaunchKernel(big, 1, 1, 1, 32, 1, 1, 8192, NULL, bparams, NULL));
  int v = 0;
  OK(cuFuncGetAttribute(&v, CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, big));
  TRUE(v == 40960, "SHARED_SIZE_BYTES %d, want 40960", v);
  // module-scope .shared arrays count for the kernels that name them; over 48 KiB fails at load, as ptxas would
  CUmodule m2;
  OK(cuModuleLoadData(&m2, ptx("sm_70", "7.8",
                               ".shared .align 4 .b8 tile[32768];\n"
                               ".shared .align 4 .b8 other[16384];\n"
                               ".visible .entry emu_test_dynsmem_sum(.param .u64 a, .param .u64 b)\n"
                               "{\n\tmov.u32 %r1, tile;\n\tret;\n}\n")));
  CUfunction g;
  OK(cuModuleGetFunction(&g, m2, "emu_test_dynsmem_sum"));
  OK(cuFuncGetAttribute(&v, CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, g));
  TRUE(v == 32768, "SHARED_SIZE_BYTES %d, want 32768 (tile, not other)", v);
  EXPECT(cuLaunchKernel(g, 1, 1, 1, 32, 1, 1, 16384 + 4, NULL, params, NULL), CUDA_ERROR_INVALID_VALUE);
  CUmodule m3;
  EXPECT(cuModuleLoadData(&m3, ptx("sm_70", "7.8",
                                   ".visible .entry emu_test_dynsmem_sum(.param .u64 a, .param .u64 b)\n"
                                   "{\n\t.shared .align 4 .b8 s[51200];\n\tret;\n}\n")),
         CUDA_ERROR_INVALID_PTX);
  OK(cuCtxSynchronize());
  OK(cuMemFree(d));
  OK(cuCtxDestroy(ctx));
}

// Opting in to more than 48 KiB of dynamic shared memory (cuFuncSetAttribute, MAX_DYNAMIC_SHARED_SIZE_BYTES), up to
// the device's MAX_SHARED_MEMORY_PER_BLOCK_OPTIN less the function's static shared memory: 96 KiB on sm_70, 163 KiB
// on sm_80, 227 KiB on sm_90; beyond it, or launching above the limit set, CUDA_ERROR_INVALID_VALUE.
static void case_shared_optin(void) {
  CUcontext ctx = setup();
  CUdevice dev;
  OK(cuCtxGetDevice(&dev));
  const int cc = cc_env();
  const int want = cc >= 90 ? 227 * 1024 : cc == 80 ? 163 * 1024 : cc >= 80 ? 99 * 1024 : 96 * 1024;
  int optin = 0, v = 0;
  OK(cuDeviceGetAttribute(&optin, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, dev));
  TRUE(optin == want, "MAX_SHARED_MEMORY_PER_BLOCK_OPTIN %d, want %d at compute capability %d", optin, want, cc);
  OK(cuDeviceGetAttribute(&v, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK, dev));
  TRUE(v == 48 * 1024, "MAX_SHARED_MEMORY_PER_BLOCK %d, want 49152 without opting in", v);
  CUmodule m = load();
  CUfunction f = fn(m, "emu_test_dynsmem_sum");
  CUfunction big = fn(m, "emu_test_switch_cost");  // 40960 bytes of static shared memory
  OK(cuFuncGetAttribute(&v, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, f));
  TRUE(v == 48 * 1024, "MAX_DYNAMIC_SHARED_SIZE_BYTES %d before opting in, want 49152", v);
  OK(cuFuncGetAttribute(&v, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, big));
  TRUE(v == 8192, "MAX_DYNAMIC_SHARED_SIZE_BYTES %d of a kernel with 40960 static bytes, want 8192", v);
  CUdeviceptr d;
  OK(cuMemAlloc(&d, 1 << 16));
  float h[64];
  for (int i = 0; i < 64; i++) h[i] = (float)(i + 1);
  OK(cuMemcpyHtoD(d, h, sizeof h));
  uint64_t a0 = d, a1 = d + 4096;
  void* params[] = {&a0, &a1};
  const unsigned kb96 = 96 * 1024;
  EXPECT(cuLaunchKernel(f, 1, 1, 1, 64, 1, 1, kb96, NULL, params, NULL), CUDA_ERROR_INVALID_VALUE);
  EXPECT(cuFuncSetAttribute(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, optin + 1), CUDA_ERROR_INVALID_VALUE);
  EXPECT(cuFuncSetAttribute(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, -1), CUDA_ERROR_INVALID_VALUE);
  OK(cuFuncGetAttribute(&v, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, f));
  TRUE(v == 48 * 1024, "MAX_DYNAMIC_SHARED_SIZE_BYTES %d after refused settings, want 49152", v);
  EXPECT(cuFuncSetAttribute(f, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, 64), CUDA_ERROR_INVALID_VALUE);  // read-only
  OK(cuFuncSetAttribute(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, kb96));
  OK(cuFuncGetAttribute(&v, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, f));
  TRUE(v == (int)kb96, "MAX_DYNAMIC_SHARED_SIZE_BYTES %d, want %u", v, kb96);
  OK(cuLaunchKernel(f, 1, 1, 1, 64, 1, 1, kb96, NULL, params, NULL));
  EXPECT(cuLaunchKernel(f, 1, 1, 1, 64, 1, 1, kb96 + 4, NULL, params, NULL), CUDA_ERROR_INVALID_VALUE);
  float sum = 0;
  OK(cuMemcpyDtoH(&sum, a1, sizeof sum));
  TRUE(sum == 64 * 65 / 2, "sum %g with 96 KiB of dynamic shared memory, want %d", sum, 64 * 65 / 2);
  OK(cuFuncSetAttribute(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, optin));
  OK(cuLaunchKernel(f, 1, 1, 1, 64, 1, 1, optin, NULL, params, NULL));
  EXPECT(cuLaunchKernel(f, 1, 1, 1, 64, 1, 1, optin + 4, NULL, params, NULL), CUDA_ERROR_INVALID_VALUE);
  // static shared memory counts against the opt-in limit
  EXPECT(cuFuncSetAttribute(big, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, optin - 40960 + 1),
         CUDA_ERROR_INVALID_VALUE);
  OK(cuFuncSetAttribute(big, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, optin - 40960));
  // the limit is the function's: another function of the module keeps the default
  CUfunction other = fn(m, "emu_test_barrier_diverge");
  OK(cuFuncGetAttribute(&v, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, other));
  TRUE(v == 48 * 1024, "MAX_DYNAMIC_SHARED_SIZE_BYTES %d of an untouched function, want 49152", v);
  OK(cuCtxSynchronize());
  OK(cuMemFree(d));
  OK(cuCtxDestroy(ctx));
}

static void case_copy_bounds(void) {
  CUcontext ctx = setup();
  CUdeviceptr a, b;
  OK(cuMemAlloc(&a, 1000));
  OK(cuMemAlloc(&b, 1000));
  char host[2000];
  memset(host, 1, sizeof host);
  OK(cuMemcpyHtoD(a, host, 1000));
  OK(cuMemcpyHtoD(a + 500, host, 500));
  EXPECT(cuMemcpyHtoD(a + 500, host, 501), CUDA_ERROR_INVALID_VALUE);
  EXPECT(cuMemcpyHtoD(a, host, 2000), CUDA_ERROR_INVALID_VALUE);
  EXPECT(cuMemcpyHtoD(a - 4, host, 8), CUDA_ERROR_INVALID_VALUE);
  EXPECT(cuMemcpyHtoD(12345, host, 8), CUDA_ERROR_INVALID_VALUE);
  EXPECT(cuMemcpyDtoH(host, a + 999, 2), CUDA_ERROR_INVALID_VALUE);
  OK(cuMemcpyDtoH(host, a + 999, 1));
  EXPECT(cuMemcpyDtoD(b, a, 1001), CUDA_ERROR_INVALID_VALUE);
  EXPECT(cuMemcpyDtoD(b + 1, a, 1000), CUDA_ERROR_INVALID_VALUE);
  OK(cuMemcpyDtoD(b, a, 1000));
  OK(cuMemcpyDtoD(a + 1, a, 999));  // overlapping, like memmove
  EXPECT(cuMemsetD32(a + 2, 0, 4), CUDA_ERROR_INVALID_VALUE);  // misaligned
  EXPECT(cuMemsetD32(a, 0, 251), CUDA_ERROR_INVALID_VALUE);    // 1004 bytes
  OK(cuMemsetD32(a, 0, 250));
  OK(cuMemFree(a));
  EXPECT(cuMemcpyHtoD(a, host, 4), CUDA_ERROR_INVALID_VALUE);  // freed
  EXPECT(cuMemcpyDtoH(host, a, 4), CUDA_ERROR_INVALID_VALUE);
  OK(cuMemcpyHtoD(b, host, 0));  // zero bytes
  OK(cuMemFree(b));
  OK(cuCtxDestroy(ctx));
}

static void case_double_free(void) {
  CUcontext ctx = setup();
  CUdeviceptr a;
  OK(cuMemAlloc(&a, 256));
  EXPECT(cuMemFree(a + 4), CUDA_ERROR_INVALID_VALUE);  // not the start
  OK(cuMemFree(a));
  EXPECT(cuMemFree(a), CUDA_ERROR_INVALID_VALUE);  // double free
  EXPECT(cuMemFree(0x1000), CUDA_ERROR_INVALID_VALUE);
  OK(cuMemFree(0));
  OK(cuCtxDestroy(ctx));
}

// DDPM_EMU_LEAKS=fail: cuCtxDestroy with live allocations fails; otherwise it reports them and succeeds.
static void case_leak(void) {
  CUcontext ctx = setup();
  CUdeviceptr a, b, c;
  OK(cuMemAlloc(&a, 100));
  OK(cuMemAlloc(&b, 200));
  OK(cuMemAlloc(&c, 300));
  OK(cuMemFree(c));
  const char* l = getenv("DDPM_EMU_LEAKS");
  EXPECT(cuCtxDestroy(ctx), l && strcmp(l, "fail") == 0 ? CUDA_ERROR_INVALID_VALUE : CUDA_SUCCESS);
  ctx = setup();  // the memory was released with the context
  size_t free0, total;
  OK(cuMemGetInfo(&free0, &total));
  TRUE(free0 == total, "free %zu of %zu after destroying a leaky context", free0, total);
  OK(cuCtxDestroy(ctx));
}

static void case_unknown_function(void) {
  CUcontext ctx = setup();
  CUmodule m = load();
  CUfunction f;
  EXPECT(cuModuleGetFunction(&f, m, "no_such_kernel"), CUDA_ERROR_NOT_FOUND);
  EXPECT(cuModuleGetFunction(&f, m, "emu_test_barrier"), CUDA_ERROR_NOT_FOUND);  // emulated, not in this PTX
  OK(cuModuleGetFunction(&f, m, "emu_test_oob_write"));
  CUmodule bad;
  EXPECT(cuModuleLoadData(&bad, ptx("sm_70", "7.8", ".visible .entry not_a_kernel_anywhere(.param .u64 a)\n{\n\tret;\n}\n")),
         CUDA_ERROR_INVALID_IMAGE);  // the emulator has no such kernel to run
  OK(cuCtxDestroy(ctx));
}

static void case_target(void) {
  CUcontext ctx = setup();
  const int cc = cc_env();
  const char* targets[] = {"sm_70", "sm_80", "sm_86", "sm_90"};
  const int sms[] = {70, 80, 86, 90};
  CUmodule m;
  for (int i = 0; i < 4; i++) {
    CUresult want = sms[i] <= cc ? CUDA_SUCCESS : CUDA_ERROR_INVALID_PTX;
    EXPECT(cuModuleLoadData(&m, ptx(targets[i], "7.8", kEntries)), want);
  }
  // the same through cuModuleLoadDataEx, whose error log says why
  char log[512] = "";
  CUjit_option opts[] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
  void* vals[] = {log, (void*)(uintptr_t)sizeof log};
  EXPECT(cuModuleLoadDataEx(&m, ptx("sm_90", "7.8", kEntries), 2, opts, vals),
         cc >= 90 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_PTX);
  if (cc < 90) TRUE(strstr(log, "sm_90") != NULL, "JIT error log \"%s\" does not name the target", log);
  EXPECT(cuModuleLoadData(&m, ptx("sm_70", "9.0", kEntries)), CUDA_ERROR_UNSUPPORTED_PTX_VERSION);
  EXPECT(cuModuleLoadData(&m, "this is not PTX"), CUDA_ERROR_INVALID_PTX);
  EXPECT(cuModuleLoadData(&m, "\x7f" "ELF\2\1\1"), CUDA_ERROR_NOT_SUPPORTED);
  OK(cuCtxDestroy(ctx));
}

static void case_kernel_faults(void) {
  // an out-of-bounds write (one element past the end) damages the allocation's guard band
  CUcontext ctx = setup();
  CUfunction oob = fn(load(), "emu_test_oob_write");
  CUdeviceptr d;
  OK(cuMemAlloc(&d, 10 * sizeof(float)));
  uint64_t a0 = d;
  int32_t n = 10;
  void* params[] = {&a0, &n};
  OK(cuLaunchKernel(oob, 1, 1, 1, 32, 1, 1, 0, NULL, params, NULL));  // asynchronous: the fault shows at the sync
  EXPECT(cuCtxSynchronize(), CUDA_ERROR_ILLEGAL_ADDRESS);
  EXPECT(cuCtxSynchronize(), CUDA_ERROR_ILLEGAL_ADDRESS);  // sticky
  CUdeviceptr e;
  EXPECT(cuMemAlloc(&e, 64), CUDA_ERROR_ILLEGAL_ADDRESS);
  OK(cuCtxDestroy(ctx));

  // a pointer argument into freed memory
  ctx = setup();
  oob = fn(load(), "emu_test_oob_write");
  OK(cuMemAlloc(&d, 64));
  OK(cuMemFree(d));
  a0 = d;
  n = 1;
  OK(cuLaunchKernel(oob, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL));
  EXPECT(cuCtxSynchronize(), CUDA_ERROR_ILLEGAL_ADDRESS);
  OK(cuCtxDestroy(ctx));

  // threads waiting at different __syncthreads
  ctx = setup();
  CUfunction div = fn(load(), "emu_test_barrier_diverge");
  OK(cuMemAlloc(&d, 64 * sizeof(float)));
  a0 = d;
  void* dparams[] = {&a0};
  OK(cuLaunchKernel(div, 1, 1, 1, 64, 1, 1, 0, NULL, dparams, NULL));
  EXPECT(cuCtxSynchronize(), CUDA_ERROR_LAUNCH_FAILED);
  OK(cuCtxDestroy(ctx));

  // a new context starts clean
  ctx = setup();
  OK(cuMemAlloc(&d, 64));
  OK(cuCtxSynchronize());
  OK(cuMemFree(d));
  OK(cuCtxDestroy(ctx));
}

// Run with DDPM_EMU_FAIL=alloc:2,launch:emu_test_dynsmem_sum:2,sync:2
static void case_fault_injection(void) {
  CUcontext ctx = setup();
  CUfunction f = fn(load(), "emu_test_dynsmem_sum");
  CUdeviceptr a, b, c;
  OK(cuMemAlloc(&a, 1024));
  EXPECT(cuMemAlloc(&b, 1024), CUDA_ERROR_OUT_OF_MEMORY);  // the 2nd allocation
  OK(cuMemAlloc(&c, 1024));
  uint64_t a0 = a, a1 = c;
  void* params[] = {&a0, &a1};
  OK(cuLaunchKernel(f, 1, 1, 1, 32, 1, 1, 128, NULL, params, NULL));
  OK(cuCtxSynchronize());  // sync 1
  OK(cuLaunchKernel(f, 1, 1, 1, 32, 1, 1, 128, NULL, params, NULL));  // the 2nd launch faults
  EXPECT(cuCtxSynchronize(), CUDA_ERROR_ILLEGAL_ADDRESS);          // (sticky: not counted as a sync)
  OK(cuCtxDestroy(ctx));
  ctx = setup();
  EXPECT(cuCtxSynchronize(), CUDA_ERROR_LAUNCH_FAILED);  // sync 2
  EXPECT(cuCtxSynchronize(), CUDA_ERROR_LAUNCH_FAILED);  // sticky
  OK(cuCtxDestroy(ctx));
  ctx = setup();
  OK(cuCtxSynchronize());  // each rule fires once
  OK(cuMemAlloc(&a, 1024));
  OK(cuMemFree(a));
  OK(cuCtxDestroy(ctx));
}

// A function the driver does not emulate: CUDA_ERROR_NOT_SUPPORTED, its name on stderr once.
static void case_stub(void) {
  CUcontext ctx = setup();
  CUstream s;
  EXPECT(cuStreamCreateWithPriority(&s, 0, 0), CUDA_ERROR_NOT_SUPPORTED);
  EXPECT(cuStreamCreateWithPriority(&s, 0, 0), CUDA_ERROR_NOT_SUPPORTED);
  int lo, hi;
  EXPECT(cuCtxGetStreamPriorityRange(&lo, &hi), CUDA_ERROR_NOT_SUPPORTED);
  OK(cuCtxDestroy(ctx));
}

// Streams and events, in every DDPM_EMU_STREAMS mode: what CUDA guarantees holds in each; what it does not (work on
// a stream nobody waited for) is seen late in the mode that defers that stream.
static float host_seen[8];  // what host functions read of device memory (the emulator's is host memory)
static int host_calls;
static void read_out(void* p) { host_seen[host_calls++ % 8] = *(const float*)p; }

static void case_streams(void) {
  const char* mode = getenv("DDPM_EMU_STREAMS");
  const int defer_streams = mode && strcmp(mode, "defer-streams") == 0;
  const int defer_null = mode && strcmp(mode, "defer-null") == 0;
  CUcontext ctx = setup();
  CUfunction f = fn(load(), "emu_test_dynsmem_sum");
  float in[64], out = -1, zero = 0;
  for (int i = 0; i < 64; i++) in[i] = 1;
  CUdeviceptr din, dout;
  OK(cuMemAlloc(&din, sizeof in));
  OK(cuMemAlloc(&dout, sizeof out));
  OK(cuMemcpyHtoD(din, in, sizeof in));
  OK(cuMemcpyHtoD(dout, &zero, sizeof zero));
  uint64_t a0 = din, a1 = dout;
  void* params[] = {&a0, &a1};
  CUstream s, b;
  CUevent e, t0, t1;
  unsigned flags = 9;
  OK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
  OK(cuStreamCreate(&b, CU_STREAM_DEFAULT));
  EXPECT(cuStreamCreate(&s, 4), CUDA_ERROR_INVALID_VALUE);
  OK(cuStreamGetFlags(s, &flags));
  TRUE(flags == CU_STREAM_NON_BLOCKING, "flags %u", flags);
  OK(cuEventCreate(&e, CU_EVENT_DISABLE_TIMING));
  OK(cuEventCreate(&t0, CU_EVENT_DEFAULT));
  OK(cuEventCreate(&t1, CU_EVENT_DEFAULT));
  EXPECT(cuStreamWaitEvent(s, e, 1), CUDA_ERROR_INVALID_VALUE);
  OK(cuStreamWaitEvent(s, e, 0));  // never recorded: nothing to wait for

  // 1. A kernel on the non-blocking stream, then a copy on the NULL stream without a wait: it is not ordered after
  // the kernel. Only when the stream's work is deferred does the copy see the old value.
  OK(cuEventRecord(t0, s));
  OK(cuLaunchKernel(f, 1, 1, 1, 64, 1, 1, 64 * sizeof(float), s, params, NULL));
  OK(cuEventRecord(e, s));
  OK(cuEventRecord(t1, s));
  OK(cuMemcpyDtoH(&out, dout, sizeof out));
  TRUE(out == (defer_streams ? 0 : 64), "%s: a copy not ordered after the kernel read %g", mode ? mode : "sync", out);
  EXPECT(cuEventQuery(e), defer_streams ? CUDA_ERROR_NOT_READY : CUDA_SUCCESS);
  EXPECT(cuStreamQuery(s), defer_streams ? CUDA_ERROR_NOT_READY : CUDA_SUCCESS);
  // ... with the wait, always the kernel's result.
  OK(cuStreamWaitEvent(NULL, e, 0));
  OK(cuMemcpyDtoH(&out, dout, sizeof out));
  TRUE(out == 64, "after cuStreamWaitEvent the copy read %g, want 64", out);
  OK(cuEventQuery(e));
  float ms = -1;
  EXPECT(cuEventElapsedTime(&ms, t0, e), CUDA_ERROR_INVALID_HANDLE);  // e does not time
  EXPECT(cuEventElapsedTime(&ms, t0, t1), defer_streams ? CUDA_ERROR_NOT_READY : CUDA_SUCCESS);  // t1 came after e
  OK(cuEventSynchronize(t1));
  OK(cuEventElapsedTime(&ms, t0, t1));
  TRUE(ms >= 0, "elapsed %g ms", ms);

  // 2. A wait holds the record as it was: recording the event again later does not move it.
  OK(cuMemcpyHtoD(dout, &zero, sizeof zero));
  OK(cuLaunchKernel(f, 1, 1, 1, 64, 1, 1, 64 * sizeof(float), s, params, NULL));
  OK(cuEventRecord(e, s));
  OK(cuLaunchHostFunc(s, read_out, (void*)dout));  // the kernel's 64
  OK(cuStreamWaitEvent(NULL, e, 0));
  OK(cuMemcpyHtoD(din, &zero, sizeof zero));  // in[0] = 0: the next sum is 63
  OK(cuLaunchKernel(f, 1, 1, 1, 64, 1, 1, 64 * sizeof(float), s, params, NULL));
  OK(cuLaunchHostFunc(s, read_out, (void*)dout));  // 63
  OK(cuEventRecord(e, s));
  OK(cuMemcpyDtoH(&out, dout, sizeof out));
  TRUE(out == (defer_streams ? 64 : 63), "%s: read %g", mode ? mode : "sync", out);
  OK(cuEventSynchronize(e));
  OK(cuMemcpyDtoH(&out, dout, sizeof out));
  TRUE(out == 63, "after cuEventSynchronize read %g, want 63", out);
  TRUE(host_calls == 2 && host_seen[0] == 64 && host_seen[1] == 63, "host functions: %d calls, saw %g %g", host_calls,
       host_seen[0], host_seen[1]);

  // 3. A blocking stream and the NULL stream wait for each other's work, in every mode.
  OK(cuMemcpyHtoD(dout, &zero, sizeof zero));
  OK(cuLaunchKernel(f, 1, 1, 1, 64, 1, 1, 64 * sizeof(float), b, params, NULL));
  OK(cuMemcpyDtoH(&out, dout, sizeof out));
  TRUE(out == 63, "a copy after work on a blocking stream read %g, want 63", out);
  OK(cuMemcpyHtoD(dout, &zero, sizeof zero));
  OK(cuLaunchKernel(f, 1, 1, 1, 64, 1, 1, 64 * sizeof(float), NULL, params, NULL));
  OK(cuLaunchHostFunc(b, read_out, (void*)dout));
  OK(cuStreamSynchronize(b));
  TRUE(host_calls == 3 && host_seen[2] == 63, "a blocking stream's host function after a NULL-stream kernel saw %g",
       host_seen[2]);

  // 4. The NULL stream's work and a non-blocking stream: only the wait orders them. With the NULL stream deferred,
  // a host function on s that does not wait runs before the kernel it was issued after.
  OK(cuMemcpyHtoD(dout, &zero, sizeof zero));
  OK(cuLaunchKernel(f, 1, 1, 1, 64, 1, 1, 64 * sizeof(float), NULL, params, NULL));
  OK(cuLaunchHostFunc(s, read_out, (void*)dout));
  OK(cuEventRecord(e, NULL));
  OK(cuStreamWaitEvent(s, e, 0));
  OK(cuLaunchHostFunc(s, read_out, (void*)dout));
  OK(cuCtxSynchronize());
  TRUE(host_calls == 5 && host_seen[3] == (defer_null ? 0 : 63) && host_seen[4] == 63,
       "%s: host functions on s saw %g without and %g with the wait", mode ? mode : "sync", host_seen[3], host_seen[4]);

  // 5. Handles: destroyed streams and events, the NULL stream, another context's.
  OK(cuLaunchHostFunc(s, read_out, (void*)dout));
  OK(cuStreamDestroy(s));  // runs its work first
  TRUE(host_calls == 6, "cuStreamDestroy left %d host functions unrun", 6 - host_calls);
  EXPECT(cuLaunchKernel(f, 1, 1, 1, 64, 1, 1, 64 * sizeof(float), s, params, NULL), CUDA_ERROR_INVALID_HANDLE);
  EXPECT(cuStreamSynchronize(s), CUDA_ERROR_INVALID_HANDLE);
  EXPECT(cuStreamDestroy(NULL), CUDA_ERROR_INVALID_HANDLE);
  OK(cuStreamSynchronize(NULL));
  OK(cuStreamSynchronize(CU_STREAM_LEGACY));
  OK(cuEventDestroy(e));
  EXPECT(cuEventRecord(e, NULL), CUDA_ERROR_INVALID_HANDLE);
  EXPECT(cuEventSynchronize(e), CUDA_ERROR_INVALID_HANDLE);
  EXPECT(cuLaunchHostFunc(b, NULL, NULL), CUDA_ERROR_INVALID_VALUE);
  CUcontext other;
  CUdevice dev;
  OK(cuDeviceGet(&dev, 0));
  OK(cuCtxCreate(&other, 0, dev));  // now current
  EXPECT(cuStreamSynchronize(b), CUDA_ERROR_INVALID_CONTEXT);
  OK(cuCtxDestroy(other));
  OK(cuCtxSetCurrent(ctx));
  // Work queued at cuCtxDestroy runs before the context goes.
  OK(cuLaunchHostFunc(b, read_out, (void*)dout));
  OK(cuEventDestroy(t0));
  OK(cuEventDestroy(t1));
  OK(cuStreamDestroy(b));
  OK(cuMemFree(din));
  OK(cuMemFree(dout));
  OK(cuCtxDestroy(ctx));
  TRUE(host_calls == 7, "%d host functions ran, want 7", host_calls);
}

// DDPM_EMU_STREAM_LOG: one line per stream operation issued ("issue s1 launch emu_test_dynsmem_sum") and per deferred
// one when it runs ("run s1 ...").
static void case_stream_log(void) {
  CUcontext ctx = setup();
  CUstream s;
  CUevent e;
  OK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
  OK(cuEventCreate(&e, CU_EVENT_DISABLE_TIMING));
  OK(cuLaunchHostFunc(s, read_out, &host_seen[7]));
  OK(cuEventRecord(e, s));
  OK(cuStreamWaitEvent(NULL, e, 0));
  OK(cuEventDestroy(e));
  OK(cuStreamDestroy(s));
  OK(cuCtxDestroy(ctx));
}

// DDPM_EMU_ORDER: the missing __syncthreads of emu_test_missing_sync goes unnoticed in forward order only.
static void case_order(void) {
  CUcontext ctx = setup();
  CUfunction f = fn(load(), "emu_test_missing_sync");
  float in[256], out[256];
  for (int i = 0; i < 256; i++) in[i] = (float)(i + 1);
  CUdeviceptr din, dout;
  OK(cuMemAlloc(&din, sizeof in));
  OK(cuMemAlloc(&dout, sizeof out));
  OK(cuMemcpyHtoD(din, in, sizeof in));
  uint64_t a0 = din, a1 = dout;
  void* params[] = {&a0, &a1};
  OK(cuLaunchKernel(f, 1, 1, 1, 256, 1, 1, 0, NULL, params, NULL));
  OK(cuMemcpyDtoH(out, dout, sizeof out));
  int wrong = 0;
  for (int i = 0; i < 256; i++) wrong += out[i] != in[i > 0 ? i - 1 : 0];
  const char* o = getenv("DDPM_EMU_ORDER");
  if (!o || strcmp(o, "forward") == 0) {
    TRUE(wrong == 0, "forward order: %d wrong", wrong);
  } else {
    TRUE(wrong > 0, "%s order: the missing __syncthreads went unnoticed", o);
  }
  OK(cuMemFree(din));
  OK(cuMemFree(dout));
  OK(cuCtxDestroy(ctx));
}

int main(int argc, char** argv) {
  static const struct {
    const char* name;
    void (*run)(void);
  } cases[] = {
      {"noinit", case_noinit},
      {"device", case_device},
      {"context", case_context},
      {"meminfo", case_meminfo},
      {"launch", case_launch},
      {"params_exact", case_params_exact},
      {"param_count", case_param_count},
      {"block_limits", case_block_limits},
      {"shared_limits", case_shared_limits},
      {"shared_optin", case_shared_optin},
      {"copy_bounds", case_copy_bounds},
      {"double_free", case_double_free},
      {"leak", case_leak},
      {"unknown_function", case_unknown_function},
      {"target", case_target},
      {"kernel_faults", case_kernel_faults},
      {"fault_injection", case_fault_injection},
      {"stub", case_stub},
      {"streams", case_streams},
      {"stream_log", case_stream_log},
      {"order", case_order},
  };
  if (argc != 2) {
    fprintf(stderr, "usage: check CASE\n");
    return 2;
  }
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    if (strcmp(argv[1], cases[i].name) == 0) {
      cases[i].run();
      if (failures) fprintf(stderr, "check %s: %d failure(s)\n", argv[1], failures);
      return failures ? 1 : 0;
    }
  fprintf(stderr, "check: no case %s\n", argv[1]);
  return 2;
}
