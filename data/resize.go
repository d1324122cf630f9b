package data

import "math"

// Resampling is separable: rows first, then columns, each a 1-D filter with precomputed weights. The filter is the
// triangle (tent) kernel tri(x) = max(0, 1−|x|), stretched by the reduction factor when downscaling:
//
//	scale       = in/out
//	fs          = max(scale, 1)                      (filter scale: ≥ 1 so upscaling is plain bilinear)
//	center(o)   = (o + 0.5)·scale                    (output pixel o's center in input coordinates)
//	w(o, i)     = tri((i + 0.5 − center(o)) / fs)    for input pixels i within center ± fs, clipped to [0, in)
//	out[o]      = Σ_i w(o,i)·in[i] / Σ_i w(o,i)
//
// This is Pillow's antialiased BILINEAR resize (what torchvision's Resize does to PIL images, the usual CelebA
// pipeline). Stretching the kernel makes every input pixel contribute when shrinking 140 → 32 (4.4×), which is what
// "anti-aliased" means here; a fixed 2-tap bilinear would sample 2 of every 4.4 pixels and alias. Weights are
// normalized, so a constant image stays exactly constant, and the kernel is symmetric, so a linear ramp stays linear
// away from the borders.

// resampleWeights holds, for each output pixel, the first input index and the normalized weights.
type resampleWeights struct {
	start []int
	w     [][]float32
}

func newResampleWeights(in, out int) resampleWeights {
	scale := float64(in) / float64(out)
	fs := math.Max(scale, 1)
	rw := resampleWeights{start: make([]int, out), w: make([][]float32, out)}
	for o := 0; o < out; o++ {
		center := (float64(o) + 0.5) * scale
		lo := max(int(math.Floor(center-fs+0.5)), 0)
		hi := min(int(math.Floor(center+fs+0.5)), in)
		ws := make([]float64, 0, hi-lo)
		var sum float64
		for i := lo; i < hi; i++ {
			x := math.Abs((float64(i) + 0.5 - center) / fs)
			v := 0.0
			if x < 1 {
				v = 1 - x
			}
			ws = append(ws, v)
			sum += v
		}
		w32 := make([]float32, len(ws))
		for k, v := range ws {
			w32[k] = float32(v / sum)
		}
		rw.start[o], rw.w[o] = lo, w32
	}
	return rw
}

// resizePlane resamples one h×w float32 plane to oh×ow (rows then columns). tmp must hold h·ow floats.
func resizePlane(dst []float32, oh, ow int, src []float32, h, w int, rx, ry resampleWeights, tmp []float32) {
	tmp = tmp[:h*ow]
	for y := 0; y < h; y++ {
		row := src[y*w : (y+1)*w]
		for o := 0; o < ow; o++ {
			var s float32
			in := row[rx.start[o]:]
			for k, wt := range rx.w[o] {
				s += wt * in[k]
			}
			tmp[y*ow+o] = s
		}
	}
	for o := 0; o < oh; o++ {
		d := dst[o*ow : (o+1)*ow]
		clear(d)
		for k, wt := range ry.w[o] {
			r := tmp[(ry.start[o]+k)*ow:][:ow]
			for x := range d {
				d[x] += wt * r[x]
			}
		}
	}
}

// toUint8 rounds to nearest and clamps to [0, 255].
func toUint8(v float32) uint8 {
	if v <= 0 {
		return 0
	}
	if v >= 255 {
		return 255
	}
	return uint8(v + 0.5)
}
