/* Direct (column-free) stride-1 float32 convolution: the public entry points.
 *
 * The kernels compute a convolution straight from the zero-padded input, a block of
 * output pixels x 16 or 32 filters held in vector registers, instead of writing the
 * im2col columns and calling a GEMM. One body (direct_conv_body.h) is compiled once
 * per instruction set (direct_conv_avx512.c, direct_conv_avx2.c, direct_conv_base.c);
 * direct_conv.c picks the best one the CPU supports on the first call.
 *
 * Layouts (C order, float32):
 *   xp   (C, Hp, Wp)       one zero-padded sample (forward), or (n, C, Hp, Wp)  (dW)
 *   wt   (C, kh, kw, F)    the weights W (F, C, kh, kw) transposed
 *   out  (F, Ho, Wo)       Ho = Hp - kh + 1, Wo = Wp - kw + 1
 *   dT   (n, Ho, Wo, F)    dout transposed
 *   dwt  (C, kh, kw, F)    the weight gradient transposed, accumulated into
 * F must be a multiple of 16. */
#ifndef AIRI_DIRECT_CONV_H
#define AIRI_DIRECT_CONV_H

#include <stddef.h>

/* The version in use: 2 = AVX-512, 1 = AVX2+FMA, 0 = baseline, -1 = not compiled in
 * (a compiler without GCC vector extensions: the callers then never use the kernels). */
int airi_direct_conv_level(void);

/* For tests: use a lower version than the CPU supports; a level above the current
 * one restores the best. Returns the previous level. */
int airi_direct_conv_force_level(int level);

/* out = conv(xp, W) + bias (bias (F,) or NULL) for one sample. */
void airi_direct_conv_f32(const float* xp, const float* wt, const float* bias,
                          float* out, ptrdiff_t C, ptrdiff_t Hp, ptrdiff_t Wp,
                          ptrdiff_t F, ptrdiff_t kh, ptrdiff_t kw);

/* dwt += correlation of the n padded samples xp with dT. Returns 1 when done, 0 when
 * kw is not 3, 5 or 7 (the widths compiled). */
int airi_direct_conv_dw_f32(const float* xp, const float* dT, float* dwt,
                            ptrdiff_t n, ptrdiff_t C, ptrdiff_t Hp, ptrdiff_t Wp,
                            ptrdiff_t F, ptrdiff_t kh, ptrdiff_t kw);

#endif /* AIRI_DIRECT_CONV_H */
