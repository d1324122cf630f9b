//go:build cuda

package kernels

import "embed"

// PTX holds ptx/*.ptx, one module per kernels/*.cu, made by `make ptx` (nvcc -ptx -arch=compute_70) and committed,
// so that the cuda build needs no nvcc; and ptx/sm80/*.ptx (-arch=compute_80: conv2d.ptx, whose _tf32 convolutions
// use tensor cores and cp.async, conv2d_wgrad_tf32.ptx, the TF32 backward-weight ones, conv2d_bf16.ptx, the _bf16
// ones, linear_bf16.ptx, gemm_bf16, and tc_probe.ptx, the tests' probes of those instructions), loaded in addition
// on devices of compute capability 8.0 or newer.
//
//go:embed ptx/*.ptx ptx/sm80/*.ptx
var PTX embed.FS
