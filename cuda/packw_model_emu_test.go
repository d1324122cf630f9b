//go:build !cuda

package cuda

import (
	"math"
	"math/rand"
	"testing"

	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/model"
	"github.com/ddpmgo/ddpm/ops"
)

// noPacker hides the backend's weight packing (and keeps its fused convolutions, so that only the packing
// differs): the model then packs every weight per call.
type noPacker struct {
	ops.Backend
	ops.ConvFuser
}

// TestPackConvWeightsModel: two steps (Forward, Backward, AdamW) of a small U-Net -- conv 3x3 and 1x1 shortcuts,
// stride-2 downsamplers with PadEnd, upsamplers -- give the same output, gradients and weights, bit for bit, with
// the weights packed once per Forward (one batch launch, no per-call weight pack) as without.
func TestPackConvWeightsModel(t *testing.T) {
	cfg := config.Model{BlockChannels: []int{8, 16}, LayersPerBlock: 1, MidAttention: true,
		AttentionResolutions: []int{4}, AttentionHeadDim: 4, NormGroups: 4, NormEps: 1e-5, FlipSinToCos: true}
	const in, size, batch = 3, 8, 2
	// tf32 too: this model's 3-channel conv_out has a backward-weight whose A chunks past dy's width read the slack
	// after the packed dy, which held unrounded floats of earlier launchers until the packs zeroed it (CONV_SLACK);
	// the emulator's mma refused them as non-TF32 operands.
	for _, prec := range []ops.Precision{ops.FP32, ops.TF32, ops.BF16} {
		t.Run(string(prec), func(t *testing.T) {
			run := func(pack bool) ([][]float32, *launchCounter) {
				be, lc := packBackend(t, prec)
				var b ops.Backend = be
				if !pack {
					b = noPacker{be, be}
				}
				u, err := model.New(b, cfg, in, size, batch)
				if err != nil {
					t.Fatal(err)
				}
				u.Init(3)
				rnd := rand.New(rand.NewSource(5))
				vals := func(n int, f func() float32) ops.Buf {
					v := make([]float32, n)
					for i := range v {
						v[i] = f()
					}
					buf := be.Alloc(n)
					be.Upload(buf, v)
					return buf
				}
				normal := func() float32 { return float32(rnd.NormFloat64()) }
				x := vals(batch*in*size*size, normal)
				tt := vals(batch, func() float32 { return float32(rnd.Intn(1000)) })
				dout := vals(batch*in*size*size, normal)
				m, v := be.Alloc(u.NumParams()), be.Alloc(u.NumParams())
				var out [][]float32
				get := func(b ops.Buf) {
					h := make([]float32, b.Len())
					be.Download(h, b)
					out = append(out, h)
				}
				lc.reset()
				for step := 0; step < 2; step++ {
					u.ZeroGrads()
					get(u.Forward(x, tt, batch))
					u.Backward(dout)
					get(u.Grads())
					be.AdamWStep(ops.AdamW{LR: 1e-2, Beta1: 0.9, Beta2: 0.99, Eps: 1e-8, RC1: 1, RC2: 1, GradScale: 1},
						u.Params(), u.Grads(), m, v)
					get(u.Params())
				}
				if err := be.Sync(); err != nil {
					t.Fatalf("pack %v: %v", pack, err)
				}
				return out, lc
			}
			want, lcRef := run(false)
			got, lc := run(true)
			if lc.packW() != 0 || lc.batch() != 2 {
				t.Errorf("packed: %d per-call weight packs and %d batch packs in two steps, want 0 and 2", lc.packW(),
					lc.batch())
			}
			if lcRef.packW() == 0 || lcRef.batch() != 0 {
				t.Errorf("unpacked: %d per-call weight packs and %d batch packs", lcRef.packW(), lcRef.batch())
			}
			names := []string{"output", "grads", "params"}
			for i := range want {
				for j := range want[i] {
					if math.Float32bits(got[i][j]) != math.Float32bits(want[i][j]) {
						t.Fatalf("step %d %s[%d] = %g, per-call packs give %g", i/3+1, names[i%3], j, got[i][j],
							want[i][j])
					}
				}
			}
		})
	}
}
