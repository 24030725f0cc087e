/* Run-time choice of the direct convolution's instruction-set version (see
 * direct_conv.h for the contract, direct_conv_body.h for the kernels). */
#include "direct_conv.h"
#include "direct_conv_isa.h"

#if AIRI_HAVE_DIRECT

/* 2 = AVX-512, 1 = AVX2+FMA, 0 = baseline; -1 until detected. Detection is idempotent,
 * so two threads racing on the first call store the same value. */
static int airi_dc_level = -1;

int airi_direct_conv_level(void)
{
    if (airi_dc_level < 0) {
        int level = 0;
#if AIRI_DISPATCH
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma"))
            level = 2;
        else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
            level = 1;
#endif
        airi_dc_level = level;
    }
    return airi_dc_level;
}

int airi_direct_conv_force_level(int level)
{
    int previous = airi_direct_conv_level();
    if (level >= 0 && level <= previous) {
        airi_dc_level = level;
    } else if (level > previous) {
        airi_dc_level = -1;                 /* re-detect: back to the best version */
        airi_direct_conv_level();
    }
    return previous;
}

void airi_direct_conv_f32(const float* xp, const float* wt, const float* bias,
                          float* out, ptrdiff_t C, ptrdiff_t Hp, ptrdiff_t Wp,
                          ptrdiff_t F, ptrdiff_t kh, ptrdiff_t kw)
{
    switch (airi_direct_conv_level()) {
#if AIRI_DISPATCH
    case 2: airi_dc_sample_avx512(xp, wt, bias, out, C, Hp, Wp, F, kh, kw); return;
    case 1: airi_dc_sample_avx2(xp, wt, bias, out, C, Hp, Wp, F, kh, kw); return;
#endif
    default: airi_dc_sample_base(xp, wt, bias, out, C, Hp, Wp, F, kh, kw); return;
    }
}

int airi_direct_conv_dw_f32(const float* xp, const float* dT, float* dwt,
                            ptrdiff_t n, ptrdiff_t C, ptrdiff_t Hp, ptrdiff_t Wp,
                            ptrdiff_t F, ptrdiff_t kh, ptrdiff_t kw)
{
    switch (airi_direct_conv_level()) {
#if AIRI_DISPATCH
    case 2: return airi_dw_chunk_avx512(xp, dT, dwt, n, C, Hp, Wp, F, kh, kw);
    case 1: return airi_dw_chunk_avx2(xp, dT, dwt, n, C, Hp, Wp, F, kh, kw);
#endif
    default: return airi_dw_chunk_base(xp, dT, dwt, n, C, Hp, Wp, F, kh, kw);
    }
}

#else  /* no vector extensions: the planner never chooses the direct kernels */

int airi_direct_conv_level(void) { return -1; }
int airi_direct_conv_force_level(int level) { (void)level; return -1; }

void airi_direct_conv_f32(const float* xp, const float* wt, const float* bias,
                          float* out, ptrdiff_t C, ptrdiff_t Hp, ptrdiff_t Wp,
                          ptrdiff_t F, ptrdiff_t kh, ptrdiff_t kw)
{
    (void)xp; (void)wt; (void)bias; (void)out; (void)C; (void)Hp; (void)Wp; (void)F;
    (void)kh; (void)kw;
}

int airi_direct_conv_dw_f32(const float* xp, const float* dT, float* dwt,
                            ptrdiff_t n, ptrdiff_t C, ptrdiff_t Hp, ptrdiff_t Wp,
                            ptrdiff_t F, ptrdiff_t kh, ptrdiff_t kw)
{
    (void)xp; (void)dT; (void)dwt; (void)n; (void)C; (void)Hp; (void)Wp; (void)F;
    (void)kh; (void)kw;
    return 0;
}
#endif
