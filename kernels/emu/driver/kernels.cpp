// kernels.cpp -- the emulator's one translation unit inside the emulated driver library, as cuda/emu_cgo.cpp is for
// the default build: the CUDA shim, the self-test kernels, every kernels/*.cu (kernels.inc, listed by the Makefile),
// then the runtime whose C API driver.cpp calls.
#pragma GCC optimize("fp-contract=off")
#include "../emu.h"

#include "../selftest.cu"
#include "kernels.inc"

#include "../emu_runtime.h"
