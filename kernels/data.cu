// data.cu -- the training batch from a device-resident uint8 data set (ops.Feed; its definition is data.HostFeed)
// and the training timesteps. Launched by cuda/data.go.
#include "common.cuh"
#include "philox.cuh"

// The batch of an epoch, with nothing but kernel arguments from the host: order is the epoch's permutation of the N
// images (uploaded once per epoch), and sample s of the batch is image order[k0 + s], mirrored left-right when
// flip_on and philox_uniform(seed, stream, flip_off + k0 + s) < 0.5 (data.FlipAt's draw, flip_off = epoch·N):
//   out[s, c, y, x] = data[order[k0+s], c, y, flip ? W−1−x : x] / 127.5 − 1
// (bit for bit data.Gather's values). An image index outside [0, N) writes NaN.
extern "C" __global__ void gather_epoch_u8_f32(const unsigned char* data, const int* order, float* out, int batch,
                                               int N, int C, int H, int W, int k0, int flip_on,
                                               unsigned long long seed, unsigned int stream,
                                               unsigned long long flip_off) {
  const long long per = (long long)C * H * W;
  const long long total = (long long)batch * per;
  for (long long j = global_index(); j < total; j += global_stride()) {
    const int s = (int)(j / per);
    const long long r = j - (long long)s * per;  // c·H·W + y·W + x
    const int x = (int)(r % W);
    const int k = order[k0 + s];
    if (k < 0 || k >= N) {
      out[j] = NAN;
      continue;
    }
    const bool flip = flip_on && philox_uniform(seed, stream, flip_off + (unsigned long long)(k0 + s)) < 0.5f;
    const int sx = flip ? W - 1 - x : x;
    // A true division (not ·(1/127.5)): the same float expression as the host's data.ToFloat, so bit for bit.
    out[j] = (float)data[(long long)k * per + (r - x) + sx] / 127.5f - 1.0f;
  }
}
EMU_REGISTER(gather_epoch_u8_f32)

// Training timesteps drawn on the device: t[i] = (float)philox_intn(seed, stream, offset + i, T) for i < n, bit for
// bit rng.Intn (stored as float values, as ops.Backend passes timesteps).
extern "C" __global__ void timesteps_f32(float* t, int n, unsigned long long seed, unsigned int stream,
                                         unsigned long long offset, int T) {
  for (long long i = global_index(); i < n; i += global_stride())
    t[i] = (float)philox_intn(seed, stream, offset + (unsigned long long)i, (unsigned long long)T);
}
EMU_REGISTER(timesteps_f32)
