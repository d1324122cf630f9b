//go:build !cuda

package cuda

import (
	"math/rand"
	"testing"

	"github.com/ddpmgo/ddpm/ops"
)

// TestEmuGroupNormLastBlockSetsTicketsBack: the group-norm backward's last block adds the parameter gradients and
// returns the ticket counter to 0, so that the next launch finds its last block too: two launches accumulate exactly
// twice the first one's dgamma and dbeta (a doubling is exact), with a grid of many blocks.
func TestEmuGroupNormLastBlockSetsTicketsBack(t *testing.T) {
	be, _ := fillsBackend(t)
	rnd := rand.New(rand.NewSource(3))
	s := ops.NormShape{N: 6, C: 16, HW: 10, G: 8, Eps: 1e-5} // 48 blocks
	n := s.N * s.C * s.HW
	x, g, b, dy := fillsUpload(be, fillsRand(rnd, n)), fillsUpload(be, fillsRand(rnd, s.C)),
		fillsUpload(be, fillsRand(rnd, s.C)), fillsUpload(be, fillsRand(rnd, n))
	st, y := be.Alloc(2*s.N*s.G), be.Alloc(n)
	be.GroupNorm(s, x, g, b, y, st)
	dg, db := be.Alloc(s.C), be.Alloc(s.C)
	var once [2][]float32
	for k := 0; k < 2; k++ {
		be.GroupNormSiLUBackward(s, x, g, b, st, dy, nil, dg, db)
		tickets := make([]uint32, 1)
		if err := Download(be.d, tickets, be.tickets); err != nil {
			t.Fatal(err)
		}
		if tickets[0] != 0 {
			t.Fatalf("launch %d: the ticket counter is %d after the kernel, want 0", k+1, tickets[0])
		}
		got := [2][]float32{fillsDownload(t, be, dg), fillsDownload(t, be, db)}
		for i, name := range []string{"dgamma", "dbeta"} {
			if k == 0 {
				once[i] = got[i]
				continue
			}
			for c := range got[i] {
				if got[i][c] != 2*once[i][c] || once[i][c] == 0 {
					t.Fatalf("%s[%d] after two launches = %v, want 2 × %v (nonzero)", name, c, got[i][c], once[i][c])
				}
			}
		}
	}
}
