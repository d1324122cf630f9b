// data.cu -- the training batch from a device-resident uint8 data set. Launched by cuda/data.go.
#include "common.cuh"

// Gather, scale and flip: data is [N, C, H, W] uint8; for sample s of the batch, image idx[s] is copied to
// out[s] [C, H, W] as out = data/127.5 − 1 (so 0 → −1, 255 → 1), mirrored left-right when flip[s] != 0:
//   out[s, c, y, x] = data[idx[s], c, y, flip[s] ? W−1−x : x] / 127.5 − 1
// An idx outside [0, N) writes NaN.
extern "C" __global__ void gather_u8_f32(const unsigned char* data, const int* idx, const int* flip, float* out,
                                         int batch, int N, int C, int H, int W) {
  const long long per = (long long)C * H * W;
  const long long total = (long long)batch * per;
  for (long long j = global_index(); j < total; j += global_stride()) {
    const int s = (int)(j / per);
    const long long r = j - (long long)s * per;  // c·H·W + y·W + x
    const int x = (int)(r % W);
    const int k = idx[s];
    if (k < 0 || k >= N) {
      out[j] = NAN;
      continue;
    }
    const int sx = flip[s] ? W - 1 - x : x;
    out[j] = (float)data[(long long)k * per + (r - x) + sx] * (1.0f / 127.5f) - 1.0f;
  }
}
EMU_REGISTER(gather_u8_f32)
