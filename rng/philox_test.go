package rng

import "testing"

// Known-answer tests from Random123's kat_vectors (the philox4x32 lines; columns: rounds, counter[4], key[2],
// expected output[4]). The 7-round vectors pin the round function and key schedule independently of the round count.
var philoxKATs = []struct {
	rounds int
	ctr    [4]uint32
	key    [2]uint32
	want   [4]uint32
}{
	{7, [4]uint32{0, 0, 0, 0}, [2]uint32{0, 0}, [4]uint32{0x5f6fb709, 0x0d893f64, 0x4f121f81, 0x4f730a48}},
	{7, [4]uint32{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, [2]uint32{0xffffffff, 0xffffffff},
		[4]uint32{0x5207ddc2, 0x45165e59, 0x4d8ee751, 0x8c52f662}},
	{7, [4]uint32{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, [2]uint32{0xa4093822, 0x299f31d0},
		[4]uint32{0x4dfccaba, 0x190a87f0, 0xc47362ba, 0xb6b5242a}},
	{10, [4]uint32{0, 0, 0, 0}, [2]uint32{0, 0}, [4]uint32{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
	{10, [4]uint32{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, [2]uint32{0xffffffff, 0xffffffff},
		[4]uint32{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
	{10, [4]uint32{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, [2]uint32{0xa4093822, 0x299f31d0},
		[4]uint32{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
}

func TestPhilox4x32KnownAnswers(t *testing.T) {
	for _, c := range philoxKATs {
		got := philox4x32R(c.rounds, c.ctr, c.key)
		if got != c.want {
			t.Errorf("philox4x32_%d(ctr=%08x, key=%08x) = %08x, want %08x", c.rounds, c.ctr, c.key, got, c.want)
		}
		if c.rounds == 10 {
			if got := Philox4x32(c.ctr, c.key); got != c.want {
				t.Errorf("Philox4x32(ctr=%08x, key=%08x) = %08x, want %08x", c.ctr, c.key, got, c.want)
			}
		}
	}
}

// TestBlockCounterMapping pins the documented mapping of (seed, stream, block) onto Philox's counter and key.
func TestBlockCounterMapping(t *testing.T) {
	cases := []struct {
		seed   uint64
		stream uint32
		block  uint64
	}{
		{0, 0, 0},
		{0x299f31d0a4093822, 0x13198a2e, 0x85a308d3243f6a88},
		{^uint64(0), ^uint32(0), ^uint64(0)},
		{42, StreamNoise, 1 << 32},
	}
	for _, c := range cases {
		want := Philox4x32(
			[4]uint32{uint32(c.block & 0xffffffff), uint32(c.block >> 32), c.stream, 0},
			[2]uint32{uint32(c.seed & 0xffffffff), uint32(c.seed >> 32)})
		if got := Block(c.seed, c.stream, c.block); got != want {
			t.Errorf("Block(%#x, %#x, %#x) = %08x, want %08x", c.seed, c.stream, c.block, got, want)
		}
	}
	// With seed, stream and block all zero the counter and key are zero: Random123's zero vector.
	if got, want := Block(0, 0, 0), philoxKATs[3].want; got != want {
		t.Errorf("Block(0, 0, 0) = %08x, want Random123's zero vector %08x", got, want)
	}
	for i := uint64(0); i < 12; i++ {
		w := Block(7, 3, i>>2)
		if got := Uint32(7, 3, i); got != w[i&3] {
			t.Errorf("Uint32(7, 3, %d) = %08x, want lane %d of block %d = %08x", i, got, i&3, i>>2, w[i&3])
		}
	}
}
