//go:build cuda

package kernels

import "embed"

// PTX holds ptx/*.ptx, one module per kernels/*.cu, made by `make ptx` (nvcc -ptx -arch=compute_70) and committed,
// so that the cuda build needs no nvcc.
//
//go:embed ptx/*.ptx
var PTX embed.FS
