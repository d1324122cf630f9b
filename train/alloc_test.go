package train

import (
	"testing"

	"go.uber.org/zap"

	"github.com/ddpmgo/ddpm/cpu"
	"github.com/ddpmgo/ddpm/ops"
)

// nullBackend keeps the CPU backend's memory (Alloc, Slice, Upload, Download) and turns every computation into a
// no-op, so that allocation counts measure the trainer, the model's dispatch, the data Loader and the RNG, not
// the backend's own scheduling.
type nullBackend struct{ *cpu.Backend[float32] }

func (nullBackend) Fill(ops.Buf, float32)                                    {}
func (nullBackend) Copy(_, _ ops.Buf)                                        {}
func (nullBackend) Add(_, _, _ ops.Buf)                                      {}
func (nullBackend) Axpy(float32, ops.Buf, ops.Buf)                           {}
func (nullBackend) Scale(float32, ops.Buf)                                   {}
func (nullBackend) SiLU(_, _ ops.Buf)                                        {}
func (nullBackend) SiLUBackward(_, _, _ ops.Buf)                             {}
func (nullBackend) Conv2D(ops.ConvShape, ops.Buf, ops.Buf, ops.Buf, ops.Buf) {}
func (nullBackend) Conv2DBackward(ops.ConvShape, ops.Buf, ops.Buf, ops.Buf, ops.Buf, ops.Buf, ops.Buf) {
}
func (nullBackend) GroupNorm(ops.NormShape, ops.Buf, ops.Buf, ops.Buf, ops.Buf, ops.Buf) {}
func (nullBackend) GroupNormBackward(ops.NormShape, ops.Buf, ops.Buf, ops.Buf, ops.Buf, ops.Buf, ops.Buf, ops.Buf) {
}
func (nullBackend) GroupNormSiLU(ops.NormShape, ops.Buf, ops.Buf, ops.Buf, ops.Buf, ops.Buf) {}
func (nullBackend) GroupNormSiLUBackward(ops.NormShape, ops.Buf, ops.Buf, ops.Buf, ops.Buf, ops.Buf, ops.Buf, ops.Buf, ops.Buf) {
}
func (nullBackend) Linear(int, int, int, ops.Buf, ops.Buf, ops.Buf, ops.Buf) {}
func (nullBackend) LinearBackward(int, int, int, ops.Buf, ops.Buf, ops.Buf, ops.Buf, ops.Buf, ops.Buf) {
}
func (nullBackend) TimestepEmbedding(ops.EmbedShape, ops.Buf, ops.Buf)                   {}
func (nullBackend) Upsample2x(int, int, int, ops.Buf, ops.Buf)                           {}
func (nullBackend) Upsample2xBackward(int, int, int, ops.Buf, ops.Buf)                   {}
func (nullBackend) Concat(int, int, int, int, ops.Buf, ops.Buf, ops.Buf)                 {}
func (nullBackend) ConcatBackward(int, int, int, int, ops.Buf, ops.Buf, ops.Buf)         {}
func (nullBackend) AddChannel(int, int, int, int, ops.Buf, ops.Buf, ops.Buf)             {}
func (nullBackend) ChannelSum(int, int, int, int, ops.Buf, ops.Buf)                      {}
func (nullBackend) Transpose(int, int, int, ops.Buf, ops.Buf)                            {}
func (nullBackend) TransposeBackward(int, int, int, ops.Buf, ops.Buf)                    {}
func (nullBackend) Attention(ops.AttnShape, ops.Buf, ops.Buf, ops.Buf, ops.Buf, ops.Buf) {}
func (nullBackend) AttentionBackward(ops.AttnShape, ops.Buf, ops.Buf, ops.Buf, ops.Buf, ops.Buf, ops.Buf, ops.Buf, ops.Buf) {
}
func (nullBackend) Dropout(float32, uint64, uint64, ops.Buf, ops.Buf)                   {}
func (nullBackend) DropoutBackward(float32, uint64, uint64, ops.Buf, ops.Buf)           {}
func (nullBackend) MSE(_, _, _ ops.Buf)                                                 {}
func (nullBackend) MSEBackward(float32, ops.Buf, ops.Buf, ops.Buf)                      {}
func (nullBackend) SumSquares(_, _ ops.Buf)                                             {}
func (nullBackend) AdamWStep(ops.AdamW, ops.Buf, ops.Buf, ops.Buf, ops.Buf)             {}
func (nullBackend) EMA(float32, ops.Buf, ops.Buf)                                       {}
func (nullBackend) Normal(uint64, uint32, uint64, ops.Buf)                              {}
func (nullBackend) Timesteps(uint64, uint32, uint64, int, ops.Buf)                      {}
func (nullBackend) QSample(*ops.Schedule, int, int, ops.Buf, ops.Buf, ops.Buf, ops.Buf) {}

// TestStepAllocatesNothing checks the hot loop's claim for the code above the backend: after a warm-up step (which
// makes the model's batch views), a training step — data, t, ε, forward, backward, norm, AdamW, EMA, with
// accumulation, dropout and flips, and the reads of the step controller — allocates nothing. (What the backend itself allocates is its own business and
// its own test.)
func TestStepAllocatesNothing(t *testing.T) {
	cfg := testConfig(t, t.TempDir(), "train.max_steps=100", "train.grad_accum=2", "model.dropout=0.1", "data.flip=true")
	tr, err := setup(cfg, Options{Backend: nullBackend{cpu.New()}, Dataset: synthetic(64)}, zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tr.close()
	stepOnce := func() { // a step, and the read of the step controller as the loop does it (every log_every steps)
		if err := tr.step(); err != nil {
			t.Fatal(err)
		}
		if tr.pending == windowSize(cfg.Train) {
			if _, err := tr.read(); err != nil {
				t.Fatal(err)
			}
		}
	}
	stepOnce()
	if a := testing.AllocsPerRun(20, stepOnce); a != 0 {
		t.Errorf("a training step allocates %v times", a)
	}
}
