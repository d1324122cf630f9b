package cuda

import "testing"

// TestDryDriverCounts: live bytes go up by each allocation's size and down by the freed one's, the peak keeps the
// most, addresses are aligned and distinct, and a free of an unknown address fails.
func TestDryDriverCounts(t *testing.T) {
	d := &DryDriver{}
	a, _ := d.Alloc(1000)
	b, _ := d.Alloc(3000)
	if a%256 != 0 || b%256 != 0 || b < a+1000 {
		t.Errorf("addresses %#x, %#x: want 256-aligned, not overlapping", a, b)
	}
	if err := d.Free(a); err != nil {
		t.Fatal(err)
	}
	c, _ := d.Alloc(500)
	if d.MemUsed() != 3500 || d.MemPeak() != 4000 {
		t.Errorf("used %d, peak %d; want 3500, 4000", d.MemUsed(), d.MemPeak())
	}
	if err := d.Free(a); err == nil {
		t.Error("a second free of the same address should fail")
	}
	d.Free(b)
	d.Free(c)
	if d.MemUsed() != 0 {
		t.Errorf("used %d after freeing everything", d.MemUsed())
	}
	if free, total, _ := d.MemInfo(); total != DryMemory || free != DryMemory {
		t.Errorf("MemInfo %d free of %d", free, total)
	}
	d.ResetPeak()
	if d.MemPeak() != 0 {
		t.Errorf("peak %d after ResetPeak with nothing live", d.MemPeak())
	}
	var got []string
	d.Record = func(k string, _, _ Dim3, _ int, args []Arg) { got = append(got, k+" "+Geometry(args)) }
	d.Memset32(c, 0, 8)
	d.Launch("k", Dim3{X: 1}, Dim3{X: 32}, 0, I32(7))
	if len(got) != 2 || got[0] != "Memset32 i64=32" || got[1] != "k i32=7" {
		t.Errorf("recorded %q", got)
	}
}
