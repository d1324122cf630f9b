//go:build cgo

package cpu

// LayoutStream is layoutStream, for the external test package's benchmarks.
var LayoutStream = layoutStream
