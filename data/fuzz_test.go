package data

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzReadIDX: ReadIDX never panics; what it accepts holds exactly prod(dims) elements, and re-encoding a raw
// (non-gzip) input gives back the input. Seeds: f.Add below and testdata/fuzz/FuzzReadIDX.
func FuzzReadIDX(f *testing.F) {
	f.Add(encodeIDX([]int{2, 3, 3}, synthIDX(2, 3, 3)))
	f.Add(encodeIDX([]int{4}, []uint8{9, 0, 0, 3}))
	f.Add(gzipBytes(f, encodeIDX([]int{1, 2, 2}, []uint8{1, 2, 3, 4})))
	f.Add([]byte{0, 0, 8, 3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{0x1f, 0x8b})
	f.Fuzz(func(t *testing.T, data []byte) {
		dims, elems, err := ReadIDX(bytes.NewReader(data), "fuzz-input")
		if err != nil {
			if !strings.Contains(err.Error(), "fuzz-input") {
				t.Fatalf("error does not name the input: %v", err)
			}
			return
		}
		total := 1
		for _, d := range dims {
			total *= d
		}
		if len(dims) < 1 || len(dims) > 4 || len(elems) != total {
			t.Fatalf("accepted dims %v with %d elements", dims, len(elems))
		}
		if len(data) >= 2 && data[0] == 0x1f && data[1] == 0x8b {
			return // gzip: the compressed bytes are not canonical
		}
		if again := encodeIDX(dims, elems); !bytes.Equal(again, data) {
			t.Fatalf("re-encoding gives %d bytes, input had %d", len(again), len(data))
		}
	})
}

// FuzzReadPack: DecodePack never panics, and what it accepts re-encodes to exactly the input (the format has one
// encoding per dataset). Seeds: f.Add below and testdata/fuzz/FuzzReadPack.
func FuzzReadPack(f *testing.F) {
	for _, m := range []*Images{synthImages(2, 1, 2, 3), synthImages(1, 3, 1, 1)} {
		b, err := EncodePack(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)-1])
	}
	f.Add([]byte("DDPMPACK"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodePack(data, "fuzz-input")
		if err != nil {
			if !strings.Contains(err.Error(), "fuzz-input") {
				t.Fatalf("error does not name the input: %v", err)
			}
			return
		}
		again, err := EncodePack(m)
		if err != nil {
			t.Fatalf("accepted pack does not re-encode: %v", err)
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("re-encoding gives %d bytes, input had %d", len(again), len(data))
		}
	})
}
