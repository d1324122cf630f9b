// Package vec holds the AVX-512 kernels of the CPU backend: SiLU and its backward (the
// exp32 polynomial on 16 lanes), a long float32 addition, and group norm's passes
// (float64 sums of float32 data in 32 partials, the normalisation, the backward's dx). They are Go assembly,
// which cannot live in package cpu because that package uses cgo. Available reports
// whether the CPU and the OS support them; package cpu falls back to scalar Go
// otherwise.
package vec
