// stubs.cpp -- every driver function that gorgonia.org/cu links (symbols.txt, from `make emu-driver-symbols`) as a
// weak symbol that logs its name to stderr once and returns CUDA_ERROR_NOT_SUPPORTED. The functions driver.cpp
// implements are strong symbols and replace these when the library is linked. A stub ignores its arguments, which is
// safe in the x86-64 calling convention (the caller owns them).
#include <atomic>
#include <cstdio>

namespace {
int not_supported(const char* name, std::atomic<bool>* logged) {
  if (!logged->exchange(true))
    fprintf(stderr, "emudriver: %s is not emulated -> CUDA_ERROR_NOT_SUPPORTED (801)\n", name);
  return 801;  // CUDA_ERROR_NOT_SUPPORTED
}
}  // namespace

#define EMU_STUB(name)                                                        \
  extern "C" __attribute__((weak, visibility("default"))) int name() {       \
    static std::atomic<bool> logged{false};                                   \
    return not_supported(#name, &logged);                                     \
  }
// symbols.inc is symbols.txt with each line NAME written as EMU_STUB(NAME) (made by the Makefile).
#include "symbols.inc"
