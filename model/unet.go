// Package model is the U-Net of the trainer: diffusers' UNet2DModel (DownBlock2D /
// UpBlock2D, AttnDownBlock2D / AttnUpBlock2D at chosen resolutions, a middle block
// with self-attention) written once against the op set ops.Backend, so that it runs
// on the CPU backend and on the GPU one.
//
// Memory is flat: all parameters live in one buffer and their gradients in another,
// with a table of diffusers state-dict keys → shape → offset (Table), so that
// checkpoints interchange with PyTorch and AdamW/EMA run over one buffer each. The
// activations that backward needs, the gradients of the activations between modules
// and the temporaries live in one workspace allocated by New for up to maxBatch
// samples and sliced per batch size (the views of a batch size are made once, on its
// first use): the steady-state training step allocates nothing.
package model

import (
	"fmt"
	"math"

	"github.com/ddpmgo/ddpm/config"
	"github.com/ddpmgo/ddpm/ops"
	"github.com/ddpmgo/ddpm/rng"
)

// UNet is a U-Net bound to a backend, with its parameters, gradients and workspace.
type UNet struct {
	be       ops.Backend
	p        *plan
	maxBatch int

	params, grads ops.Buf
	pv, gv        []ops.Buf // per-parameter views of params and grads

	packer ops.ConvWeightPacker // the backend's, when it has the capability (nil otherwise)
	convW  []ops.ConvWeight     // every conv weight (views of pv), in forward order: PackConvWeights' argument

	keeper  ops.ConvInputKeeper // the backend's, when it has the capability (nil otherwise)
	lay     layout              // the workspace's, for the keeper's kept lengths when it was made
	ws      ops.Buf
	views   map[int]batchViews // per batch size
	subs    map[subKey]ops.Buf // views within a tensor or the parameters (sub)
	cur     []ops.Buf          // views of the current batch
	curKeep batchViews         // the current batch's views of the kept inputs
	n       int                // current batch (0 before the first Forward)
	forward bool               // a Forward has run since the last Backward

	train       bool
	dropSeed    uint64
	dropStep    uint64
	dropActive  bool  // dropout applied by the last Forward
	shardOf     int   // SetShard: the global batch (0: the batch is the whole batch)
	shardFirst  int   // SetShard: the global index of this batch's first sample
	ready       []int // per layer: where the final gradients start after its backward (plan.gradsReady)
	onReady     func(from int)
	tIn         ops.Buf // t of the last Forward
	inputGrad   ops.Buf // where Backward accumulates dL/dx when set (tests)
	fwdFLOPsPer int64
}

// New lays out the U-Net of cfg for inChannels-channel images of imageSize² pixels
// and allocates on b its parameters (zero until Init or a load), gradients and the
// workspace for batches of up to maxBatch images.
func New(b ops.Backend, cfg config.Model, inChannels, imageSize, maxBatch int) (*UNet, error) {
	if imageSize <= 0 || maxBatch <= 0 {
		return nil, fmt.Errorf("model.New: image size %d and max batch %d must be > 0", imageSize, maxBatch)
	}
	p, err := newPlan(cfg, inChannels, imageSize)
	if err != nil {
		return nil, err
	}
	u := &UNet{be: b, p: p, maxBatch: maxBatch, views: map[int]batchViews{}, subs: map[subKey]ops.Buf{}}
	u.keeper, _ = b.(ops.ConvInputKeeper)
	u.lay = p.layout(u.keptPer)
	u.params = b.Alloc(p.numParams)
	u.grads = b.Alloc(p.numParams)
	for _, t := range p.params {
		u.pv = append(u.pv, b.Slice(u.params, t.Offset, t.Size))
		u.gv = append(u.gv, b.Slice(u.grads, t.Offset, t.Size))
	}
	u.ws = b.Alloc(maxBatch * u.lay.perSample)
	if pk, ok := b.(ops.ConvWeightPacker); ok {
		u.packer = pk
		u.setConvWeights()
	}
	u.ready = p.gradsReady()
	u.fwdFLOPsPer = p.flops(1)
	return u, nil
}

// Free releases the parameters, gradients and workspace on the backend; u is unusable afterwards.
func (u *UNet) Free() {
	for _, b := range []ops.Buf{u.params, u.grads, u.ws} {
		u.be.Free(b)
	}
}

// Params is the flat parameter buffer (Table gives each tensor's range).
func (u *UNet) Params() ops.Buf { return u.params }

// Grads is the flat gradient buffer, laid out as Params. Backward accumulates into
// it; the caller zeroes it once per optimizer step (ZeroGrads).
func (u *UNet) Grads() ops.Buf { return u.grads }

// ZeroGrads sets every gradient to 0.
func (u *UNet) ZeroGrads() { u.be.Fill(u.grads, 0) }

// UseParams makes the model read its weights from p, a flat buffer laid out as
// Params (e.g. the EMA copy, for sampling), and returns the buffer it used before;
// UseParams(prev) switches back. Gradients still go to Grads. It makes one view per
// tensor, so it belongs outside the training step.
func (u *UNet) UseParams(p ops.Buf) ops.Buf {
	if p.Len() != u.p.numParams {
		panic(fmt.Sprintf("model.UseParams: buffer has %d elements, the model %d parameters", p.Len(), u.p.numParams))
	}
	prev := u.params
	u.params = p
	for i, t := range u.p.params {
		u.pv[i] = u.be.Slice(p, t.Offset, t.Size)
	}
	if u.packer != nil {
		u.setConvWeights()
	}
	for k := range u.subs { // views of the previous parameters
		if k.id == subParams {
			delete(u.subs, k)
		}
	}
	return prev
}

// setConvWeights lists the conv weights of the current pv (New, UseParams) for PackConvWeights.
func (u *UNet) setConvWeights() {
	u.convW = u.convW[:0]
	for _, c := range u.p.convs {
		u.convW = append(u.convW, ops.ConvWeight{W: u.pv[c.w], Cout: c.cout, Cin: c.cin, K: c.k})
	}
}

// Table lists the parameters in buffer order (a copy; shapes are shared).
func (u *UNet) Table() []Param { return append([]Param(nil), u.p.params...) }

// NumParams is the number of scalar parameters.
func (u *UNet) NumParams() int { return u.p.numParams }

// MaxBatch is the largest batch Forward accepts.
func (u *UNet) MaxBatch() int { return u.maxBatch }

// WorkspaceElems is the size of the workspace in elements (maxBatch samples).
func (u *UNet) WorkspaceElems() int { return u.maxBatch * u.lay.perSample }

// keptPer is the keeper's kept length of a convolution input per sample (s at N = 1), 0 without a keeper.
func (u *UNet) keptPer(s ops.ConvShape) int {
	if u.keeper == nil {
		return 0
	}
	return u.keeper.KeptLen(s)
}

// checkLayout lays the workspace out again when the backend's kept lengths changed since it was made (its precision
// changed): the saved tensors' views are made anew for the next batch, and the old workspace is freed.
func (u *UNet) checkLayout() {
	for i, k := range u.p.keeps {
		if u.keptPer(k.conv) != u.lay.kept[i] {
			u.be.Free(u.ws)
			u.lay = u.p.layout(u.keptPer)
			u.ws = u.be.Alloc(u.maxBatch * u.lay.perSample)
			clear(u.views)
			for key := range u.subs {
				if key.id >= 0 {
					delete(u.subs, key)
				}
			}
			u.n = 0
			return
		}
	}
}

// Backend is the backend the U-Net lives on.
func (u *UNet) Backend() ops.Backend { return u.be }

// Init draws every parameter as PyTorch's default initialisation of its layer would,
// from the project RNG so that the weights are a pure function of seed:
//
//	Conv2d / Linear weight and bias: (2·u_i − 1)/√fan_in,  u_i = rng.Uniform(seed, rng.StreamInit, i)
//	GroupNorm weight 1, bias 0
//
// where i is the element's index in the flat buffer and fan_in is Cin·K·K (conv) or
// In (linear). kaiming_uniform_(a=√5) gives the weight bound gain·√(3/fan_in) with
// gain = √(2/(1+5)), i.e. exactly 1/√fan_in, the same bound as the bias.
func (u *UNet) Init(seed uint64) {
	host := make([]float32, u.p.numParams)
	rng.FillUniform(host, seed, rng.StreamInit, 0)
	for i, t := range u.p.params {
		s := host[t.Offset : t.Offset+t.Size]
		switch in := u.p.inits[i]; in.kind {
		case initOnes:
			for j := range s {
				s[j] = 1
			}
		case initZeros:
			clear(s)
		default:
			bound := float32(1 / math.Sqrt(float64(in.fanIn)))
			for j, v := range s {
				s[j] = bound * (2*v - 1)
			}
		}
	}
	u.be.Upload(u.params, host)
}

// SetTrain switches dropout on (train) or off and sets its RNG position: the mask of
// element i of the resnet whose dropout draws start at per-sample offset o is
//
//	rng.Uniform(dropoutSeed, rng.StreamDropout, step·2^40 + n·o + i) ≥ rate
//
// for batch n, so each step draws fresh masks (a step may draw up to 2^40) and a
// resumed run replays them. Without dropout in the config, train only records the mode.
func (u *UNet) SetTrain(train bool, dropoutSeed, step uint64) {
	u.train, u.dropSeed, u.dropStep = train, dropoutSeed, step
}

// SetShard says that the batches of Forward are the samples first … first+n−1 of a global batch of global samples
// (data-parallel training: each process runs a shard of the same batch). It changes only the dropout masks, which
// then are those of the global batch: element i of a resnet's dropout input in this batch is element
// first·perSample + i of the global batch's, drawn at rng position step·2^40 + global·o + first·perSample + i
// (see SetTrain), so N shards draw exactly the masks one process would. SetShard(0, 0) is the default (the batch is
// the whole batch).
func (u *UNet) SetShard(global, first int) {
	if global < 0 || first < 0 || (global > 0 && first >= global) {
		panic(fmt.Sprintf("model.SetShard(%d, %d): want 0 ≤ first < global", global, first))
	}
	u.shardOf, u.shardFirst = global, first
}

// OnGradsReady sets f (nil: none) to be called during Backward each time more of the gradient buffer is final for
// this Backward: f(from) says that Grads()[from:] will not change again until the next Backward (from decreases
// from call to call, down to 0 after the last layer). Data-parallel training starts reducing those gradients while
// the rest of the pass runs. On a device, "final" means in queue order: the work that produced them was launched.
func (u *UNet) OnGradsReady(f func(from int)) { u.onReady = f }

// ForwardFLOPs counts the floating-point operations (2 per multiply-add) of one
// forward pass at the given batch: convolutions, linear layers and attention's two
// batched matrix products. Normalisation and elementwise ops are not counted.
func (u *UNet) ForwardFLOPs(batch int) int64 { return int64(batch) * u.fwdFLOPsPer }

// batchViews are the views of one batch size: one per tensor id, then one over the whole gradient region (bufs); per
// keptIn, where the backend keeps it, its float32 form's place (stage) and the kept form as its convolution's x (kept).
type batchViews struct {
	bufs, stage, kept []ops.Buf
}

// setBatch points cur at the views of batch n, making them on the first use of n.
func (u *UNet) setBatch(n int) {
	if n <= 0 || n > u.maxBatch {
		panic(fmt.Sprintf("model: batch %d outside [1, %d] (New's maxBatch)", n, u.maxBatch))
	}
	if n == u.n {
		return
	}
	v, ok := u.views[n]
	if !ok {
		l := u.lay
		v.bufs = make([]ops.Buf, len(u.p.tensors)+1)
		for i := range u.p.tensors {
			if i >= numReserved {
				v.bufs[i] = u.be.Slice(u.ws, n*l.offs[i], n*l.per[i])
			}
		}
		v.bufs[len(u.p.tensors)] = u.be.Slice(u.ws, n*l.savedPer, n*l.gradPer)
		v.stage, v.kept = make([]ops.Buf, len(u.p.keeps)), make([]ops.Buf, len(u.p.keeps))
		for i, k := range u.p.keeps {
			if l.kept[i] == 0 {
				continue
			}
			s := k.conv
			s.N = n
			if got := u.keeper.KeptLen(s); got != n*l.kept[i] {
				panic(fmt.Sprintf("model: the backend keeps x of %+v in %d elements, not %d·%d (ops.ConvInputKeeper.KeptLen is "+
					"linear in N)", s, got, n, l.kept[i]))
			}
			v.stage[i] = u.be.Slice(u.ws, n*l.stageOff[i], n*u.p.tensors[k.id].per)
			v.kept[i] = u.keeper.Kept(s, v.bufs[k.id])
		}
		u.views[n] = v
	}
	u.cur, u.curKeep, u.n = v.bufs, v, n
}

// convIn is where the producer of k writes it in the forward pass: its saved tensor, or, where the backend keeps
// it, its place in the stage slot.
func (u *UNet) convIn(k keptIn) ops.Buf {
	if u.lay.kept[k.idx] > 0 {
		return u.curKeep.stage[k.idx]
	}
	return u.buf(k.id)
}

// keepIn is k as its convolution's x, once its producer wrote convIn(k): where the backend keeps it, it keeps it
// (ops.ConvInputKeeper.KeepConvInput into the saved tensor) and returns the kept view.
func (u *UNet) keepIn(k keptIn) ops.Buf {
	if u.lay.kept[k.idx] == 0 {
		return u.buf(k.id)
	}
	s := k.conv
	s.N = u.n
	u.keeper.KeepConvInput(s, u.curKeep.stage[k.idx], u.buf(k.id))
	return u.curKeep.kept[k.idx]
}

// keptX is k as its convolution's x in the backward pass.
func (u *UNet) keptX(k keptIn) ops.Buf {
	if u.lay.kept[k.idx] > 0 {
		return u.curKeep.kept[k.idx]
	}
	return u.buf(k.id)
}

// buf returns tensor id's view for the current batch.
func (u *UNet) buf(id int) ops.Buf { return u.cur[id] }

// subKey names a view made by sub: tensor id (or subParams, subGrads) at batch n (0 for the parameters), [off, off+len).
type subKey struct{ id, n, off, len int }

// Bases of sub other than a tensor.
const (
	subParams = -1 - iota
	subGrads
)

// sub returns the view [off, off+n) of tensor id at the current batch, or of the parameters (subParams) or their
// gradients (subGrads). Each is made once and kept, so that a step allocates nothing.
func (u *UNet) sub(id, off, n int) ops.Buf {
	k := subKey{id, u.n, off, n}
	base := u.params
	switch id {
	case subParams:
		k.n = 0
	case subGrads:
		k.n, base = 0, u.grads
	default:
		base = u.buf(id)
	}
	v, ok := u.subs[k]
	if !ok {
		v = u.be.Slice(base, off, n)
		u.subs[k] = v
	}
	return v
}

// Forward runs the U-Net on x [batch, C, H, W] at timesteps t [batch] (float values)
// and returns the predicted noise [batch, C, H, W], a view into the workspace that
// the next Forward overwrites.
func (u *UNet) Forward(x, t ops.Buf, batch int) ops.Buf {
	u.checkLayout()
	u.setBatch(batch)
	px := batch * u.p.in * u.p.size * u.p.size
	if x.Len() < px || t.Len() < batch {
		panic(fmt.Sprintf("model.Forward: x has %d elements (want %d = %d×%d×%d×%d), t has %d (want %d)",
			x.Len(), px, batch, u.p.in, u.p.size, u.p.size, t.Len(), batch))
	}
	u.cur[idInput] = x
	u.tIn = t
	u.dropActive = u.train && u.p.dropout > 0
	if u.packer != nil {
		u.packer.PackConvWeights(u.convW) // one launch on the GPU; Backward's convolutions use the copies too
	}
	for _, l := range u.p.layers {
		l.forward(u)
	}
	u.forward = true
	return u.buf(u.p.out.v)
}

// Backward takes dL/d(output) [batch, C, H, W] of the last Forward and accumulates
// dL/dθ into Grads(). It may run once per Forward.
func (u *UNet) Backward(dout ops.Buf) {
	if !u.forward {
		panic("model.Backward: no Forward to differentiate (Backward runs once per Forward)")
	}
	u.forward = false
	if want := u.n * u.p.out.c * u.p.out.hw(); dout.Len() != want {
		panic(fmt.Sprintf("model.Backward: dout has %d elements, want %d = %d×%d×%d×%d",
			dout.Len(), want, u.n, u.p.out.c, u.p.out.h, u.p.out.w))
	}
	u.cur[idOutGrad] = dout
	u.cur[idInputGrad] = u.inputGrad
	u.be.Fill(u.cur[len(u.p.tensors)], 0) // the gradients between modules
	last := u.p.numParams
	for i := len(u.p.layers) - 1; i >= 0; i-- {
		u.p.layers[i].backward(u)
		if u.onReady != nil && u.ready[i] < last {
			last = u.ready[i]
			u.onReady(last)
		}
	}
}
