// Package kernels holds the CUDA kernel sources (one .cu file per op family), the CPU-emulator shim in emu/, and the
// PTX that nvcc makes of them (ptx/, regenerated with `make ptx`).
//
// The sources are embedded so that Go's build cache sees them: the emulator build of package cuda compiles these
// files through a cgo #include, which the cache does not track, but it does track this package's embedded files, and
// package cuda imports this one. Editing a .cu file therefore rebuilds the emulator.
package kernels

import "embed"

// Sources holds kernels/*.cu, *.cuh and the emulator shim (emu/*.h, emu/*.cu).
//
//go:embed *.cu *.cuh emu/*.h emu/*.cu
var Sources embed.FS
