// conv2d_wgrad_tf32.cu -- the TF32 tensor-core backward-weight convolutions (conv2d_wgrad_tf32_*) as a module of
// their own: kernels/conv2d.cu compiled with CONV_WGRAD_TF32_MODULE, which keeps only those entry points (see there
// why). Launched by cuda/conv2d.go like the other conv2d kernels; for compute_80 (kernels/ptx/sm80), the compute_70
// module has the entry points with empty bodies. The emulator takes them from conv2d.cu itself, so this file is
// empty outside nvcc.
#ifdef __CUDACC__
#define CONV_WGRAD_TF32_MODULE
#include "conv2d.cu"
#endif
