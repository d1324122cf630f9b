//go:build cuda

package cuda

// #cgo LDFLAGS: -lcuda
// #cgo linux CFLAGS: -I/usr/local/cuda/include
// #cgo linux LDFLAGS: -L/usr/local/cuda/lib64
// #include <cuda.h>
import "C"

import (
	"fmt"
	"unsafe"

	"gorgonia.org/cu"
)

// defaultSharedBytes is the dynamic shared memory a kernel may use without opting in.
const defaultSharedBytes = 48 << 10

// allowShared raises fn's limit of dynamic shared memory to bytes (cuFuncSetAttribute with
// CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES), which launches of more than 48 KiB need (the tensor-core
// convolutions take 96 KiB). gorgonia.org/cu has no binding for it; its Function is a struct holding the CUfunction
// handle alone, which is read here. Call on the context's goroutine.
func allowShared(fn cu.Function, bytes int) error {
	var h C.CUfunction
	if unsafe.Sizeof(fn) != unsafe.Sizeof(h) {
		return fmt.Errorf("cuda: gorgonia.org/cu's Function is not a bare CUfunction (size %d)", unsafe.Sizeof(fn))
	}
	h = *(*C.CUfunction)(unsafe.Pointer(&fn))
	if r := C.cuFuncSetAttribute(h, C.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, C.int(bytes)); r != C.CUDA_SUCCESS {
		return fmt.Errorf("cuda: cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES, %d): CUresult %d", bytes, int(r))
	}
	return nil
}
