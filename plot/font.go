package plot

import (
	"image"
	"image/color"
)

// glyphs is a 3×5 bitmap font for the few characters the axes need; each row is 3 bits, MSB left.
var glyphs = map[rune][5]uint8{
	'0': {7, 5, 5, 5, 7}, '1': {2, 6, 2, 2, 7}, '2': {7, 1, 7, 4, 7}, '3': {7, 1, 7, 1, 7},
	'4': {5, 5, 7, 1, 1}, '5': {7, 4, 7, 1, 7}, '6': {7, 4, 7, 5, 7}, '7': {7, 1, 1, 2, 2},
	'8': {7, 5, 7, 5, 7}, '9': {7, 5, 7, 1, 7}, '.': {0, 0, 0, 0, 2}, '-': {0, 0, 7, 0, 0},
	'(': {1, 2, 2, 2, 1}, ')': {4, 2, 2, 2, 4}, 'k': {4, 5, 6, 5, 5}, 'e': {0, 7, 7, 4, 7},
	'l': {6, 2, 2, 2, 7}, 'o': {0, 7, 5, 5, 7}, 's': {0, 7, 6, 3, 7}, 't': {2, 7, 2, 2, 3},
	'p': {0, 7, 5, 7, 4}, 'g': {0, 7, 5, 7, 1}, 'a': {0, 6, 3, 5, 7}, 'c': {0, 7, 4, 4, 7},
	'v': {0, 5, 5, 5, 2}, 'm': {0, 7, 7, 5, 5}, 'r': {0, 7, 4, 4, 4}, 'n': {0, 7, 5, 5, 5},
	'i': {2, 0, 2, 2, 2}, 'x': {0, 5, 2, 2, 5}, 'y': {5, 5, 7, 1, 7}, ':': {0, 2, 0, 2, 0},
	'=': {0, 7, 0, 7, 0}, ' ': {},
}

// textWidth is the width in pixels of s drawn at the given scale.
func textWidth(s string, scale int) int { return len([]rune(s)) * 4 * scale }

// drawText draws s with its top-left corner at (x, y), each font pixel a scale×scale square.
// Characters without a glyph are drawn as blanks.
func drawText(img *image.RGBA, x, y int, s string, scale int, c color.RGBA) {
	for _, r := range s {
		g := glyphs[r]
		for row := 0; row < 5; row++ {
			for col := 0; col < 3; col++ {
				if g[row]&(4>>col) == 0 {
					continue
				}
				for dy := 0; dy < scale; dy++ {
					for dx := 0; dx < scale; dx++ {
						img.SetRGBA(x+col*scale+dx, y+row*scale+dy, c)
					}
				}
			}
		}
		x += 4 * scale
	}
}
