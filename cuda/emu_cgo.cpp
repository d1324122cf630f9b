//go:build !cuda

// The CPU emulator's one translation unit: the CUDA shim, the kernel sources, then the runtime that launches them.
// The .cu files are not tracked by Go's build cache through these #includes; package kernels embeds them, and this
// package imports it, so that editing one rebuilds this file.
// kernels/philox.cuh is bit-exact only without fused multiply-adds (-ffp-contract=off, which cgo's flag allow-list
// rejects, hence the pragma; it matters when CGO_CXXFLAGS enable FMA, e.g. -march=native).
#pragma GCC optimize("fp-contract=off")
#include "../kernels/emu/emu.h"

#include "../kernels/emu/selftest.cu"
#include "../kernels/emu/selftest_tc.cu"
#include "../kernels/tc_probe.cu"
#include "../kernels/data.cu"
#include "../kernels/elementwise.cu"
#include "../kernels/noise.cu"
#include "../kernels/optim.cu"
#include "../kernels/reduce.cu"
#include "../kernels/conv2d.cu"
#include "../kernels/groupnorm.cu"
#include "../kernels/linear.cu"
#include "../kernels/linear_bf16.cu"
#include "../kernels/embed.cu"
#include "../kernels/resample.cu"
#include "../kernels/concat.cu"
#include "../kernels/attention.cu"
#include "../kernels/dropout.cu"
#include "../kernels/sampler.cu"

#include "../kernels/emu/emu_runtime.h"
