// optim.cu -- the optimizer over the flat parameter buffer: AdamW and the EMA of the weights. Launched by
// cuda/optim.go.
#include "common.cuh"

// AdamW (torch.optim.AdamW), elementwise over n parameters; the host forms decay = LR·WeightDecay and the bias
// corrections rc1 = 1/(1−β1^step), rc2 = 1/(1−β2^step) in float64. Unfused it is:
//   g' = gscale·g;  m = β1·m + (1−β1)·g';  v = β2·v + (1−β2)·g'²
//   p  = p − decay·p − lr·(m·rc1)/(√(v·rc2) + eps)
// adamw_update is that update of element i, shared by adamw_f32 and adamw_win_f32 so that the two round alike
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

// EMA of the weights: e[i] = decay·e[i] + (1−decay)·p[i] (ema_update, shared by ema_f32 and ema_win_f32).
__device__ __forceinline__ void ema_update(float* e, const float* p, long long i, float decay) {
  e[i] = decay * e[i] + (1.0f - decay) * p[i];
}

extern "C" __global__ void ema_f32(float* e, const float* p, float decay, long long n) {
  for (long long i = global_index(); i < n; i += global_stride()) ema_update(e, p, i, decay);
}
EMU_REGISTER(ema_f32)

// The clipping factor on the device, so that the host need not read the gradient norm every step. scalars holds
// [‖G‖², loss_0 … loss_{A−1}] (SumSquares and the A micro-batch losses); with gnorm = √‖G‖²/A (the norm of the mean
// gradient) it writes, in double as the host's train.ClipScale,
//   ctl[0] = clip/A,  clip = max_norm > 0 ? min(1, max_norm/(gnorm + 1e-6)) : 1     (AdamW's GradScale)
//   ctl[1] = 1 if this step is to be skipped, else 0: ‖G‖² or a loss is NaN/Inf; with sticky ≠ 0 it stays 1 once set
//            (a run that stops on a non-finite loss keeps the weights of the last good step)
//   ctl[2] += 1 for each non-finite step (the count the host reads with the metrics)
// One thread.
extern "C" __global__ void clip_scale_f32(const float* scalars, float* ctl, int A, double max_norm, int sticky) {
  if (global_index() != 0) return;
  bool bad = !isfinite(scalars[0]);
  for (int k = 0; k < A; k++) bad = bad || !isfinite(scalars[1 + k]);
  const double gnorm = sqrt((double)scalars[0]) / (double)A;
  double clip = 1.0;
  if (max_norm > 0.0) clip = fmin(1.0, max_norm / (gnorm + 1e-6));
  ctl[0] = (float)(clip / (double)A);
  ctl[1] = (bad || (sticky && ctl[1] != 0.0f)) ? 1.0f : 0.0f;
  if (bad) ctl[2] += 1.0f;
}
EMU_REGISTER(clip_scale_f32)

// The window statistics of the training loop, so that the host reads the losses only every train.log_every steps
// (and at checkpoints and the end) instead of every step. One thread, after clip_scale_f32 of the same step.
// stats (10 floats, its own allocation: 8-byte aligned) holds
//   [0..1] double  Σ loss over the window's updated steps (each step's loss: the mean of its A micro-batch losses)
//   [2..3] double  Σ gnorm over those steps (gnorm = √‖G‖²/A, before clipping)
//   [4]    int     number of those steps (ctl[1] = 0: the update was applied)
//   [5]    int     number of non-finite steps in the window (‖G‖² or a loss NaN/Inf)
//   [6]    int     the first of them (its 1-based step number; 0: none)
//   [7]    float   the mean loss of that step, [8] float its ‖G‖² (for the error message)
//   [9..13] float  this step's AdamW and EMA settings: lr, lr·weight_decay, rc1, rc2, EMA decay (read by
//                  adamw_win_f32 and ema_win_f32)
// reset ≠ 0 (the first step after a host read) starts a new window: the sums, counts and first step are cleared
// first. The settings are those of AdamW step k = k_host − [5]: the host counts every step of the window as an
// update and learns of the skipped ones at its next read, so the device takes them off here (after counting this
// step: a skipped step's settings are not used). As train.LR and train.EMADecay, in double:
//   lr = base_lr · (warmup > 0 && k < warmup ? k/warmup : 1);  rc1 = 1/(1−β1^k), rc2 = 1/(1−β2^k)
//   EMA decay = ema_warmup ? min(ema_decay, (1 + s)/(10 + s)), s = max(k − 1, 0) : ema_decay
extern "C" __global__ void step_stats_f32(const float* scalars, const float* ctl, float* stats, int A, int step,
                                          int reset, int k_host, double base_lr, int warmup, double beta1,
                                          double beta2, double weight_decay, double ema_decay, int ema_warmup) {
  if (global_index() != 0) return;
  double* sums = (double*)stats;
  int* cnt = (int*)(stats + 4);
  if (reset) {
    sums[0] = 0.0;
    sums[1] = 0.0;
    cnt[0] = 0;
    cnt[1] = 0;
    cnt[2] = 0;
  }
  bool bad = !isfinite(scalars[0]);
  double loss = 0.0;
  for (int k = 0; k < A; k++) {
    bad = bad || !isfinite(scalars[1 + k]);
    loss += (double)scalars[1 + k];
  }
  loss /= (double)A;
  if (bad) {
    cnt[1] += 1;
    if (cnt[2] == 0) {
      cnt[2] = step;
      stats[7] = (float)loss;
      stats[8] = scalars[0];
    }
  }
  if (ctl[1] == 0.0f) {
    sums[0] += loss;
    sums[1] += sqrt((double)scalars[0]) / (double)A;
    cnt[0] += 1;
  }
  const int k = k_host - cnt[1];
  double lr = base_lr;
  if (warmup > 0 && k < warmup) lr = base_lr * (double)k / (double)warmup;
  stats[9] = (float)lr;
  stats[10] = (float)lr * (float)weight_decay;
  stats[11] = (float)(1.0 / (1.0 - pow(beta1, (double)k)));
  stats[12] = (float)(1.0 / (1.0 - pow(beta2, (double)k)));
  double decay = ema_decay;
  if (ema_warmup) {
    const double s = (double)(k > 1 ? k - 1 : 0);
    decay = fmin(ema_decay, (1.0 + s) / (10.0 + s));
  }
  stats[13] = (float)decay;
}
EMU_REGISTER(step_stats_f32)

// Zeroes the accumulated gradients unless ctl[1] ≠ 0 (a skipped step): under a sticky skip flag (a run that stops
// on a non-finite step) the gradients of the first bad step are kept (later steps add to them, and NaN/Inf stay
// non-finite under addition), so that the host, which notices the flag only at its next read, can still name the
// first non-finite gradient tensor.
extern "C" __global__ void zero_unless_skip_f32(float* g, long long n, const float* ctl) {
  if (ctl[1] != 0.0f) return;
  for (long long i = global_index(); i < n; i += global_stride()) g[i] = 0.0f;
}
EMU_REGISTER(zero_unless_skip_f32)

// adamw_f32 with GradScale read from the device (ctl[0], written by clip_scale_f32) and the learning rate, decay
// and bias corrections from stats[9..12] (step_stats_f32); does nothing when ctl[1] ≠ 0 (a skipped step).
extern "C" __global__ void adamw_win_f32(float* p, const float* g, float* m, float* v, long long n, float beta1,
                                         float beta2, float eps, const float* ctl, const float* stats) {
  if (ctl[1] != 0.0f) return;
  const float gscale = ctl[0], lr = stats[9], decay = stats[10], rc1 = stats[11], rc2 = stats[12];
  for (long long i = global_index(); i < n; i += global_stride())
    adamw_update(p, g, m, v, i, lr, beta1, beta2, eps, decay, gscale, rc1, rc2);
}
EMU_REGISTER(adamw_win_f32)

// ema_f32 with the decay read from stats[13] (step_stats_f32); does nothing when ctl[1] ≠ 0 (a skipped step).
extern "C" __global__ void ema_win_f32(float* e, const float* p, long long n, const float* ctl, const float* stats) {
  if (ctl[1] != 0.0f) return;
  const float decay = stats[13];
  for (long long i = global_index(); i < n; i += global_stride()) ema_update(e, p, i, decay);
}
EMU_REGISTER(ema_win_f32)
