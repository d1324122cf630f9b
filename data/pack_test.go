package data

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func synthImages(n, c, h, w int) *Images {
	m := &Images{C: c, H: h, W: w, Pix: make([]uint8, n*c*h*w)}
	for i := range m.Pix {
		m.Pix[i] = uint8(i*31 + i/7)
	}
	return m
}

// TestPackLayout checks the bytes of a pack against the format description, field by field, computing the
// checksums with hash/crc32 directly.
func TestPackLayout(t *testing.T) {
	m := synthImages(3, 2, 4, 5)
	path := filepath.Join(t.TempDir(), "x.pack")
	if err := WritePack(path, m); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != 36+len(m.Pix) {
		t.Fatalf("file is %d bytes, want 36 + %d", len(b), len(m.Pix))
	}
	le := binary.LittleEndian
	tab := crc32.MakeTable(crc32.Castagnoli)
	if string(b[:8]) != "DDPMPACK" || le.Uint32(b[8:]) != 1 || le.Uint32(b[12:]) != 3 || le.Uint32(b[16:]) != 2 ||
		le.Uint32(b[20:]) != 4 || le.Uint32(b[24:]) != 5 {
		t.Fatalf("header fields % x", b[:28])
	}
	if got, want := le.Uint32(b[28:]), crc32.Checksum(m.Pix, tab); got != want {
		t.Errorf("pixel crc %08x, want %08x", got, want)
	}
	if got, want := le.Uint32(b[32:]), crc32.Checksum(b[:32], tab); got != want {
		t.Errorf("header crc %08x, want %08x", got, want)
	}
	if !bytes.Equal(b[36:], m.Pix) {
		t.Error("pixels differ")
	}
	back, err := ReadPack(path)
	if err != nil {
		t.Fatal(err)
	}
	if back.Len() != 3 || back.C != 2 || back.H != 4 || back.W != 5 || !bytes.Equal(back.Pix, m.Pix) {
		t.Fatalf("read back %dx%dx%dx%d", back.Len(), back.C, back.H, back.W)
	}
	enc, err := EncodePack(m)
	if err != nil || !bytes.Equal(enc, b) {
		t.Fatalf("EncodePack differs from the written file (err %v)", err)
	}
}

func TestWritePackAtomicOverwrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "d.pack")
	for _, n := range []int{5, 2} {
		if err := WritePack(path, synthImages(n, 1, 3, 3)); err != nil {
			t.Fatal(err)
		}
		m, err := ReadPack(path)
		if err != nil || m.Len() != n {
			t.Fatalf("after writing %d images: %v, %v", n, m, err)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("directory holds %d entries after two writes (temporary files left?)", len(entries))
	}
	// A failed write (directory missing) leaves nothing and names the file.
	bad := filepath.Join(dir, "missing", "e.pack")
	if err := WritePack(bad, synthImages(1, 1, 1, 1)); err == nil || !strings.Contains(err.Error(), bad) {
		t.Fatalf("err = %v", err)
	}
	if err := WritePack(path, &Images{C: 1, H: 2, W: 2, Pix: make([]uint8, 5)}); err == nil {
		t.Fatal("ragged images written")
	}
}

func TestReadPackRefuses(t *testing.T) {
	m := synthImages(4, 3, 2, 2)
	good, err := EncodePack(m)
	if err != nil {
		t.Fatal(err)
	}
	mutate := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	reheader := func(b []byte) []byte { // recompute the header checksum after editing a field
		binary.LittleEndian.PutUint32(b[32:], crc32.Checksum(b[:32], crc32.MakeTable(crc32.Castagnoli)))
		return b
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		name, why string
		b         []byte
	}{
		{"magic", "wrong magic", mutate(func(b []byte) []byte { b[0] = 'X'; return b })},
		{"version", "unknown version 2", mutate(func(b []byte) []byte { b[8] = 2; return reheader(b) })},
		{"header-bitflip", "header checksum mismatch", mutate(func(b []byte) []byte { b[12] ^= 1; return b })},
		{"pixel-bitflip", "pixel checksum mismatch", mutate(func(b []byte) []byte { b[40] ^= 0x10; return b })},
		{"last-pixel-bitflip", "pixel checksum mismatch", mutate(func(b []byte) []byte { b[len(b)-1] ^= 0x80; return b })},
		{"crc-bitflip", "pixel checksum mismatch", mutate(func(b []byte) []byte { b[28] ^= 4; return reheader(b) })},
		{"truncated", "truncated", good[:len(good)-1]},
		{"truncated-header", "truncated", good[:20]},
		{"empty", "truncated", nil},
		{"trailing", "trailing bytes", append(append([]byte(nil), good...), 0)},
		{"zero-dim", "zero dimension", mutate(func(b []byte) []byte { binary.LittleEndian.PutUint32(b[16:], 0); return reheader(b) })},
		{"huge-dims", "truncated", mutate(func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[12:], 1<<31)
			binary.LittleEndian.PutUint32(b[20:], 1<<20)
			return reheader(b)
		})},
	} {
		p := writeFile(t, filepath.Join(dir, tc.name+".pack"), tc.b)
		_, err := ReadPack(p)
		if err == nil {
			t.Fatalf("%s: accepted", tc.name)
		}
		if !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), tc.why) {
			t.Errorf("%s: error %q does not name the file and say %q", tc.name, err, tc.why)
		}
	}
	p := filepath.Join(dir, "nope.pack")
	if _, err := ReadPack(p); err == nil || !strings.Contains(err.Error(), "bin/pack") || !strings.Contains(err.Error(), p) {
		t.Fatalf("missing pack: %v", err)
	}
}
