// resample.cu -- nearest-neighbour 2x upsampling and its backward. Launched by cuda/resample.go (grid-stride loops,
// RESAMPLE_THREADS per block).
#include "common.cuh"

#define RESAMPLE_THREADS 256

// y[c, i, j] = x[c, i/2, j/2] for x [nc, h, w], y [nc, 2h, 2w]; one thread per output element.
extern "C" __global__ void __launch_bounds__(RESAMPLE_THREADS)
    upsample2x_f32(const float* x, float* y, int nc, int h, int w) {
  const int w2 = 2 * w;
  const long long total = (long long)nc * 4 * h * w;
  for (long long e = global_index(); e < total; e += global_stride()) {
    const long long row = e / w2;  // c·2h + i
    const int j = (int)(e - row * w2);
    const long long c = row / (2 * h);
    const int i = (int)(row - c * 2 * h);
    y[e] = x[(c * h + i / 2) * w + j / 2];
  }
}
EMU_REGISTER(upsample2x_f32)

// dx[c, i, j] += dy[c,2i,2j] + dy[c,2i,2j+1] + dy[c,2i+1,2j] + dy[c,2i+1,2j+1] (in that order): the four outputs
// the forward copied x[c, i, j] to. One thread per input element.
extern "C" __global__ void __launch_bounds__(RESAMPLE_THREADS)
    upsample2x_bwd_f32(const float* dy, float* dx, int nc, int h, int w) {
  const long long total = (long long)nc * h * w;
  const int w2 = 2 * w;
  for (long long e = global_index(); e < total; e += global_stride()) {
    const long long row = e / w;  // c·h + i
    const int j = (int)(e - row * w);
    const float* a = dy + (2 * row) * w2 + 2 * j;  // output row 2i of channel c: (c·2h + 2i)·2w = 2·row·2w
    const float* b = a + w2;
    dx[e] += a[0] + a[1] + b[0] + b[1];
  }
}
EMU_REGISTER(upsample2x_bwd_f32)
