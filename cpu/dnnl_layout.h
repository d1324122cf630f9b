#pragma once
// NCHW f32 ↔ NHWC layout changes for the oneDNN ports (dnnl_layout.c); need AVX-512 with BF16
// (ddpm_layout_available).
#include <stdint.h>

// A port's layout change: none (oneDNN's reorder), NCHW f32 → NHWC bf16, NHWC f32 → NCHW f32.
enum { L_NONE, L_TO_NHWC_BF16, L_TO_NCHW_F32 };

int ddpm_layout_available(void);
void ddpm_nchw_to_nhwc_bf16(const float *src, uint16_t *dst, int n, int c, int hw, double *sums);
void ddpm_nhwc_to_nchw_f32(const float *src, float *dst, int n, int c, int hw, int acc);
// ddpm_layout_stream: streaming stores where the output allows them (on), or ordinary stores only (off).
void ddpm_layout_stream(int on);
