/* Direct 2-D convolution (stride 1, float32) for airi's Conv2D, where im2col + GEMM is
 * weak: few filters (F = 16, 32) on small images. See the notes in _conv.pyx.
 *
 * Portable build, fast where the CPU allows: with GCC/clang on x86-64 the kernel is
 * compiled three times (AVX-512, AVX2+FMA, baseline SSE2) and the first call picks the
 * best version the CPU supports (__builtin_cpu_supports); no -march=native, so one
 * build runs on any x86-64. Other compilers/CPUs get the single portable version.
 * GCC vector extensions (vector_size) are lowered to whatever each version has. */
#ifndef AIRI_DIRECT_CONV_H
#define AIRI_DIRECT_CONV_H

#include <stddef.h>
#include <string.h>

#if defined(__GNUC__)
/* one native register each: 16 floats (AVX-512), 8 (AVX2), 4 (SSE2) */
typedef float airi_v16sf __attribute__((vector_size(64)));
typedef float airi_v8sf __attribute__((vector_size(32)));
typedef float airi_v4sf __attribute__((vector_size(16)));
#define AIRI_HAVE_DIRECT 1
#else
#define AIRI_HAVE_DIRECT 0
#endif

#if AIRI_HAVE_DIRECT

#if defined(__x86_64__) && (defined(__clang__) || __GNUC__ >= 6)
#define AIRI_DISPATCH 1
/* 32 registers of 16 floats: 12 pixels x 16 filters, or 6 pixels x 32 filters */
#define AIRI_SFX _avx512
#define AIRI_ATTR __attribute__((target("avx512f,fma")))
#define AIRI_VEC airi_v16sf
#define AIRI_VL 16
#define AIRI_FW_NF 2
#define AIRI_FW_OB 6
#define AIRI_OB1 12
#define AIRI_DW_ACC 24
#include "_direct_conv_body.h"
#include "_direct_conv_undef.h"
/* 16 registers of 8 floats: 12 pixels x 8 filters, or 6 pixels x 16 filters */
#define AIRI_SFX _avx2
#define AIRI_ATTR __attribute__((target("avx2,fma")))
#define AIRI_VEC airi_v8sf
#define AIRI_VL 8
#define AIRI_FW_NF 2
#define AIRI_FW_OB 6
#define AIRI_OB1 12
#define AIRI_DW_ACC 12
#include "_direct_conv_body.h"
#include "_direct_conv_undef.h"
#else
#define AIRI_DISPATCH 0
#endif

/* 16 registers of 4 floats (SSE2, every x86-64; elsewhere GCC's generic code) */
#define AIRI_SFX _base
#define AIRI_ATTR
#define AIRI_VEC airi_v4sf
#define AIRI_VL 4
#define AIRI_FW_NF 2
#define AIRI_FW_OB 6
#define AIRI_OB1 12
#define AIRI_DW_ACC 12
#include "_direct_conv_body.h"
#include "_direct_conv_undef.h"

/* 2 = AVX-512, 1 = AVX2+FMA, 0 = baseline; decided once. */
static int airi_dc_level = -1;

static int airi_direct_conv_level(void)
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

/* For tests: run a lower version than the CPU supports (returns the previous level). */
static int airi_direct_conv_force_level(int level)
{
    int previous = airi_direct_conv_level();
    if (level >= 0 && level <= previous) airi_dc_level = level;
    else if (level > previous) {
        airi_dc_level = -1;                 /* re-detect: back to the best version */
        airi_direct_conv_level();
    }
    return previous;
}

static void airi_direct_conv_f32(const float* xp, const float* wt, const float* bias,
                                 float* out, ptrdiff_t C, ptrdiff_t Hp, ptrdiff_t Wp,
                                 ptrdiff_t F, ptrdiff_t kh, ptrdiff_t kw)
{
    int level = airi_direct_conv_level();
#if AIRI_DISPATCH
    if (level == 2) { airi_dc_sample__avx512(xp, wt, bias, out, C, Hp, Wp, F, kh, kw); return; }
    if (level == 1) { airi_dc_sample__avx2(xp, wt, bias, out, C, Hp, Wp, F, kh, kw); return; }
#endif
    (void)level;
    airi_dc_sample__base(xp, wt, bias, out, C, Hp, Wp, F, kh, kw);
}

/* dwt (C, kh, kw, F) += correlation of the padded chunk xp (n, C, Hp, Wp) with dT (n,
 * Ho, Wo, F); returns 0 (nothing done) when kw is not 3, 5 or 7. */
static int airi_direct_conv_dw_f32(const float* xp, const float* dT, float* dwt,
                                   ptrdiff_t n, ptrdiff_t C, ptrdiff_t Hp, ptrdiff_t Wp,
                                   ptrdiff_t F, ptrdiff_t kh, ptrdiff_t kw)
{
    int level = airi_direct_conv_level();
#if AIRI_DISPATCH
    if (level == 2) return airi_dw_chunk__avx512(xp, dT, dwt, n, C, Hp, Wp, F, kh, kw);
    if (level == 1) return airi_dw_chunk__avx2(xp, dT, dwt, n, C, Hp, Wp, F, kh, kw);
#endif
    (void)level;
    return airi_dw_chunk__base(xp, dT, dwt, n, C, Hp, Wp, F, kh, kw);
}

#else  /* no vector extensions: the layer never calls the kernel (see available()) */

static int airi_direct_conv_level(void) { return -1; }
static int airi_direct_conv_force_level(int level) { (void)level; return -1; }
static void airi_direct_conv_f32(const float* xp, const float* wt, const float* bias,
                                 float* out, ptrdiff_t C, ptrdiff_t Hp, ptrdiff_t Wp,
                                 ptrdiff_t F, ptrdiff_t kh, ptrdiff_t kw)
{
    (void)xp; (void)wt; (void)bias; (void)out; (void)C; (void)Hp; (void)Wp; (void)F;
    (void)kh; (void)kw;
}
static int airi_direct_conv_dw_f32(const float* xp, const float* dT, float* dwt,
                                   ptrdiff_t n, ptrdiff_t C, ptrdiff_t Hp, ptrdiff_t Wp,
                                   ptrdiff_t F, ptrdiff_t kh, ptrdiff_t kw)
{
    (void)xp; (void)dT; (void)dwt; (void)n; (void)C; (void)Hp; (void)Wp; (void)F;
    (void)kh; (void)kw;
    return 0;
}
#endif

#endif /* AIRI_DIRECT_CONV_H */
