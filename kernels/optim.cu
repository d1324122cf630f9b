// optim.cu -- the optimizer over the flat parameter buffer: AdamW and the EMA of the weights. Launched by
// cuda/optim.go.
#include "common.cuh"

// AdamW (torch.optim.AdamW, see ops.AdamW), elementwise over n parameters; the host forms decay = LR·weight decay
// and the bias corrections rc1 = 1/(1−β1^k), rc2 = 1/(1−β2^k) (package train, schedule.go). Unfused it is:
//   g' = gscale·g;  m = β1·m + (1−β1)·g';  v = β2·v + (1−β2)·g'²
//   p  = p − decay·p − lr·(m·rc1)/(√(v·rc2) + eps)
// adamw_update is that update of element i, shared by adamw_f32 and adamw_ctl_f32 so that the two round alike
// (m and v are stored before p is read, as in the unfused order above).
__device__ __forceinline__ void adamw_update(float* p, const float* g, float* m, float* v, long long i, float lr,
                                             float beta1, float beta2, float eps, float decay, float gscale, float rc1,
                                             float rc2) {
  const float gi = gscale * g[i];
  const float mi = beta1 * m[i] + (1.0f - beta1) * gi;
  const float vi = beta2 * v[i] + (1.0f - beta2) * gi * gi;
  m[i] = mi;
  v[i] = vi;
  const float pi = p[i];
  p[i] = pi - decay * pi - lr * (mi * rc1) / (sqrtf(vi * rc2) + eps);
}

extern "C" __global__ void adamw_f32(float* p, const float* g, float* m, float* v, long long n, float lr, float beta1,
                                     float beta2, float eps, float decay, float gscale, float rc1, float rc2) {
  for (long long i = global_index(); i < n; i += global_stride())
    adamw_update(p, g, m, v, i, lr, beta1, beta2, eps, decay, gscale, rc1, rc2);
}
EMU_REGISTER(adamw_f32)

// EMA of the weights: e[i] = decay·e[i] + (1−decay)·p[i] (ema_update, shared by ema_f32 and ema_ctl_f32).
__device__ __forceinline__ void ema_update(float* e, const float* p, long long i, float decay) {
  e[i] = decay * e[i] + (1.0f - decay) * p[i];
}

extern "C" __global__ void ema_f32(float* e, const float* p, float decay, long long n) {
  for (long long i = global_index(); i < n; i += global_stride()) ema_update(e, p, i, decay);
}
EMU_REGISTER(ema_f32)

// The end of a training step on the device (ops.StepControl; its definition is ops.HostStepControl, and
// cuda/optim.go launches these kernels): the host reads the window statistics only when it logs, checkpoints or
// redraws its progress bar, and a step copies nothing between host and device.
//
// StepWindow is the controller's state, in an allocation of its own (so its doubles are aligned); cuda/optim.go
// decodes it by the byte offsets below.
struct StepWindow {
  double loss;        //  0  Σ loss over the window's updated steps (a step's loss: the mean of its A losses)
  double norm;        //  8  Σ gnorm over them (gnorm = √‖G‖²/A, before clipping)
  double bad_loss;    // 16  the loss of the window's first non-finite step
  double bad_normsq;  // 24  its ‖G‖²
  int steps;          // 32  updated steps
  int taken;          // 36  steps
  int bad;            // 40  non-finite steps (‖G‖² or a loss NaN/Inf)
  int first_bad;      // 44  index among the taken steps of the first of them
  int stuck;          // 48  sticky skip: a bad step was seen (not cleared by a read)
  float gscale;       // 52  this step's AdamW GradScale: ClipFactor(max_norm, gnorm)/A
  int skip;           // 56  this step is skipped (no AdamW, no EMA)
  int row;            // 60  the settings row of this step's update: its index among the window's updates
};
static_assert(sizeof(StepWindow) == 64, "cuda/optim.go decodes 64 bytes");

// The settings rows (ops.StepSettings, formed on the host for the window's updates): lr, lr·weight_decay, rc1,
// rc2, EMA decay.
#define STEP_SETTINGS 5

// One thread, after SumSquares of the step. scalars holds [‖G‖², loss_0 … loss_{A−1}]. In the order of
// ops.HostStepControl.Update:
//   bad  = ‖G‖² or a loss non-finite;  skip = bad || (sticky && stuck);  stuck |= sticky && bad
//   gscale = clip/A, clip = max_norm > 0 ? min(1, max_norm/(gnorm + 1e-6)) : 1   (ops.ClipFactor, in double)
//   not skipped: row = steps, then the sums and steps; taken += 1
// reset ≠ 0 (the first step after a read) clears the window first (not stuck).
extern "C" __global__ void step_control_f32(const float* scalars, StepWindow* w, int A, double max_norm, int sticky,
                                            int reset) {
  if (global_index() != 0) return;
  if (reset) {
    w->loss = w->norm = w->bad_loss = w->bad_normsq = 0.0;
    w->steps = w->taken = w->bad = w->first_bad = 0;
  }
  bool bad = !isfinite(scalars[0]);
  double loss = 0.0;
  for (int k = 0; k < A; k++) {
    bad = bad || !isfinite(scalars[1 + k]);
    loss += (double)scalars[1 + k];
  }
  loss /= (double)A;
  const double gnorm = sqrt((double)scalars[0]) / (double)A;
  if (bad) {
    if (w->bad == 0) {
      w->first_bad = w->taken;
      w->bad_loss = loss;
      w->bad_normsq = (double)scalars[0];
    }
    w->bad += 1;
  }
  const bool skip = bad || (sticky && w->stuck);
  if (sticky && bad) w->stuck = 1;
  double clip = 1.0;
  if (max_norm > 0.0) clip = fmin(1.0, max_norm / (gnorm + 1e-6));
  w->gscale = (float)(clip / (double)A);
  w->skip = skip ? 1 : 0;
  w->row = w->steps;
  if (!skip) {
    w->loss += loss;
    w->norm += gnorm;
    w->steps += 1;
  }
  w->taken += 1;
}
EMU_REGISTER(step_control_f32)

// adamw_f32 with GradScale from the window (step_control_f32) and lr, decay and the bias corrections from the
// settings row of this update, fused with the zeroing of the accumulated gradient that ends the step
// (ops.HostStepControl: "unless skip and Sticky: G = 0"). Unfused it replaces
//   if !skip: AdamWStep(p, g, m, v)
//   if !(skip && sticky): g = 0        (a separate fill, or zero_unless_skip for a sticky controller)
// so g[i] is zeroed right after it is read. A skipped sticky step keeps g (the gradients of the first bad step,
// which later steps add to and NaN/Inf survive), so that the host, which notices the step at its next read, can
// still name the first non-finite gradient tensor.
extern "C" __global__ void adamw_ctl_f32(float* p, float* g, float* m, float* v, long long n, float beta1,
                                         float beta2, float eps, int sticky, const StepWindow* w,
                                         const float* settings) {
  if (w->skip) {
    if (sticky) return;
    for (long long i = global_index(); i < n; i += global_stride()) g[i] = 0.0f;
    return;
  }
  const float* s = settings + STEP_SETTINGS * w->row;
  const float gscale = w->gscale, lr = s[0], decay = s[1], rc1 = s[2], rc2 = s[3];
  for (long long i = global_index(); i < n; i += global_stride()) {
    adamw_update(p, g, m, v, i, lr, beta1, beta2, eps, decay, gscale, rc1, rc2);
    g[i] = 0.0f;
  }
}
EMU_REGISTER(adamw_ctl_f32)

// ema_f32 with the decay from the settings row of this update; does nothing when the step is skipped.
extern "C" __global__ void ema_ctl_f32(float* e, const float* p, long long n, const StepWindow* w,
                                       const float* settings) {
  if (w->skip) return;
  const float decay = settings[STEP_SETTINGS * w->row + 4];
  for (long long i = global_index(); i < n; i += global_stride()) ema_update(e, p, i, decay);
}
EMU_REGISTER(ema_ctl_f32)
