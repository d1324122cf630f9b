//go:build cuda

package kernels

import "embed"

// PTX holds ptx/*.ptx, one module per kernels/*.cu, made by `make ptx` (nvcc -ptx -arch=compute_70) and committed,
// so that the cuda build needs no nvcc; and ptx/sm80/conv2d.ptx (-arch=compute_80), whose _tf32 convolutions use
// tensor cores, loaded in addition on devices of compute capability 8.0 or newer.
//
//go:embed ptx/*.ptx ptx/sm80/*.ptx
var PTX embed.FS
