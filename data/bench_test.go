package data

import (
	"testing"
)

// BenchmarkLoadFolder decodes, crops and resizes 178×218 JPEGs (CelebA's size) to 3×32×32 on 2 workers; the
// reported ns/op is per image.
func BenchmarkLoadFolder(b *testing.B) {
	dir := jpegFolder(b, 64)
	b.ResetTimer()
	for i := 0; i < b.N; i += 64 {
		if _, _, err := LoadFolder(dir, Options{Size: 32, Crop: 140}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLoaderNext gathers a 128×3×32×32 batch (1.5 MB of float32) with flips.
func BenchmarkLoaderNext(b *testing.B) {
	m := synthImages(10000, 3, 32, 32)
	l, _ := NewLoader(m, 128, 1, true)
	buf := make([]float32, 128*3*32*32)
	b.SetBytes(int64(len(buf) * 4))
	for b.Loop() {
		l.Next(buf)
	}
}
