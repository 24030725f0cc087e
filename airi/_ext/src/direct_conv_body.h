/* The direct convolution kernels, written once for any vector width (see
 * direct_conv.h for the contract). Each of direct_conv_avx512.c, direct_conv_avx2.c
 * and direct_conv_base.c includes this body once, in its own translation unit, after
 * defining:
 *   AIRI_SFX     name suffix of the entry points (avx512, avx2, base);
 *   AIRI_ATTR    the target attribute of every function (empty for the baseline);
 *   AIRI_VEC     the native float vector;  AIRI_VL     its lanes (16, 8 or 4);
 *   AIRI_FW_NF   native vectors of filters in the wide forward block, AIRI_FW_OB its
 *                output pixels; AIRI_OB1 output pixels of the one-vector block;
 *   AIRI_DW_ACC  accumulator registers the weight-gradient block may use.
 *
 * Every vector is one machine register: GCC lowers a vector wider than the target's
 * (say 16 floats under AVX2) through memory, which measured 20x slower than native.
 * Registers hold a block of OB output pixels of one output row x NF vectors of filters;
 * each step loads NF weight vectors and broadcasts one input value per pixel: NF*OB
 * fused multiply-adds per OB + NF loads. */
#include <string.h>

#define AIRI_CAT_(a, b) a##b
#define AIRI_CAT(a, b) AIRI_CAT_(a, b)
#define AIRI_NAME(base) AIRI_CAT(base, AIRI_SFX)

/* out[f0 .. f0+VL*NF, oh, ow0 .. ow0+OB) for one output row; NF and OB are constants
 * at every call, so the loops over them unroll and acc stays in registers. */
static inline __attribute__((always_inline)) AIRI_ATTR void
AIRI_NAME(airi_dc_block_)(const float* xp, const float* wt, const float* bias,
                          float* out, ptrdiff_t C, ptrdiff_t Hp, ptrdiff_t Wp,
                          ptrdiff_t F, ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t P,
                          ptrdiff_t Wo, ptrdiff_t f0, ptrdiff_t oh, ptrdiff_t ow0,
                          const int NF, const int OB)
{
    AIRI_VEC acc[4][12];
    for (int v = 0; v < NF; v++) {
        AIRI_VEC b0 = {0};
        if (bias) memcpy(&b0, bias + f0 + AIRI_VL * v, sizeof(b0));
        for (int o = 0; o < OB; o++) acc[v][o] = b0;
    }
    for (ptrdiff_t c = 0; c < C; c++) {
        for (ptrdiff_t i = 0; i < kh; i++) {
            const float* xr = xp + (c * Hp + oh + i) * Wp + ow0;
            const float* wr = wt + (c * kh + i) * kw * F + f0;
            for (ptrdiff_t j = 0; j < kw; j++) {
                AIRI_VEC w[4];
                for (int v = 0; v < NF; v++)
                    memcpy(&w[v], wr + j * F + AIRI_VL * v, sizeof(w[v]));
                for (int o = 0; o < OB; o++) {
                    const float s = xr[o + j];
                    for (int v = 0; v < NF; v++) acc[v][o] += w[v] * s;
                }
            }
        }
    }
    for (int v = 0; v < NF; v++)
        for (int l = 0; l < AIRI_VL; l++) {
            float* dst = out + (f0 + AIRI_VL * v + l) * P + oh * Wo + ow0;
            for (int o = 0; o < OB; o++) dst[o] = acc[v][o][l];
        }
}

/* A whole output row for NF vectors of filters: greedy blocks of OB, 8/4/2/1. */
static inline __attribute__((always_inline)) AIRI_ATTR void
AIRI_NAME(airi_dc_row_)(const float* xp, const float* wt, const float* bias, float* out,
                        ptrdiff_t C, ptrdiff_t Hp, ptrdiff_t Wp, ptrdiff_t F,
                        ptrdiff_t kh, ptrdiff_t kw, ptrdiff_t P, ptrdiff_t Wo,
                        ptrdiff_t f0, ptrdiff_t oh, const int NF, const int OB)
{
    ptrdiff_t ow = 0;
#define AIRI_BLOCK(n) AIRI_NAME(airi_dc_block_)(xp, wt, bias, out, C, Hp, Wp, F, kh, kw, \
                                                P, Wo, f0, oh, ow, NF, n)
    for (; ow + OB <= Wo; ow += OB) AIRI_BLOCK(OB);
    if (OB > 8) for (; ow + 8 <= Wo; ow += 8) AIRI_BLOCK(8);
    if (OB > 4) for (; ow + 4 <= Wo; ow += 4) AIRI_BLOCK(4);
    if (OB > 2) for (; ow + 2 <= Wo; ow += 2) AIRI_BLOCK(2);
    for (; ow < Wo; ow++) AIRI_BLOCK(1);
#undef AIRI_BLOCK
}

/* xp (C, Hp, Wp) padded input of one sample, wt (C, kh, kw, F), bias (F) or NULL,
 * out (F, Ho, Wo) with Ho = Hp - kh + 1, Wo = Wp - kw + 1; F % 16 == 0; stride 1. */
AIRI_ATTR void
AIRI_NAME(airi_dc_sample_)(const float* xp, const float* wt, const float* bias,
                           float* out, ptrdiff_t C, ptrdiff_t Hp, ptrdiff_t Wp,
                           ptrdiff_t F, ptrdiff_t kh, ptrdiff_t kw)
{
    const ptrdiff_t Ho = Hp - kh + 1, Wo = Wp - kw + 1, P = Ho * Wo;
    ptrdiff_t f0 = 0;
    for (; f0 + AIRI_VL * AIRI_FW_NF <= F; f0 += AIRI_VL * AIRI_FW_NF)
        for (ptrdiff_t oh = 0; oh < Ho; oh++)
            AIRI_NAME(airi_dc_row_)(xp, wt, bias, out, C, Hp, Wp, F, kh, kw, P, Wo, f0,
                                    oh, AIRI_FW_NF, AIRI_FW_OB);
    for (; f0 < F; f0 += AIRI_VL)
        for (ptrdiff_t oh = 0; oh < Ho; oh++)
            AIRI_NAME(airi_dc_row_)(xp, wt, bias, out, C, Hp, Wp, F, kh, kw, P, Wo, f0,
                                    oh, 1, AIRI_OB1);
}


/* Weight gradient, vectorised over the filters: for one input channel c, filters
 * f0 .. f0+16*NF and kernel rows i0 .. i0+IB (all kw columns), accumulate over the
 * samples and output pixels into registers, then add to dwt (C, kh, kw, F):
 *     dwt[c, i, j, f] += sum_{s, oh, ow} xp[s, c, oh+i, ow+j] * dT[s, oh, ow, f]. */
static inline __attribute__((always_inline)) AIRI_ATTR void
AIRI_NAME(airi_dw_block_)(const float* xp, const float* dT, float* dwt, ptrdiff_t n,
                          ptrdiff_t C, ptrdiff_t Hp, ptrdiff_t Wp, ptrdiff_t F,
                          ptrdiff_t kh, ptrdiff_t c, ptrdiff_t f0, ptrdiff_t i0,
                          const int NF, const int KW, const int IB)
{
    const ptrdiff_t Ho = Hp - kh + 1, Wo = Wp - KW + 1;
    AIRI_VEC acc[8][7][2];
    for (int ii = 0; ii < IB; ii++)
        for (int j = 0; j < KW; j++)
            for (int v = 0; v < NF; v++) acc[ii][j][v] = (AIRI_VEC){0};
    for (ptrdiff_t s = 0; s < n; s++) {
        for (ptrdiff_t oh = 0; oh < Ho; oh++) {
            const float* xr = xp + ((s * C + c) * Hp + oh + i0) * Wp;
            const float* dr = dT + (s * Ho + oh) * Wo * F + f0;
            for (ptrdiff_t ow = 0; ow < Wo; ow++) {
                AIRI_VEC d[2];
                for (int v = 0; v < NF; v++)
                    memcpy(&d[v], dr + ow * F + AIRI_VL * v, sizeof(d[v]));
                for (int ii = 0; ii < IB; ii++)
                    for (int j = 0; j < KW; j++) {
                        const float x = xr[ii * Wp + ow + j];
                        for (int v = 0; v < NF; v++) acc[ii][j][v] += d[v] * x;
                    }
            }
        }
    }
    for (int ii = 0; ii < IB; ii++)
        for (int j = 0; j < KW; j++)
            for (int v = 0; v < NF; v++) {
                float* dst = dwt + ((c * kh + i0 + ii) * KW + j) * F + f0 + AIRI_VL * v;
                AIRI_VEC cur;
                memcpy(&cur, dst, sizeof(cur));
                cur += acc[ii][j][v];
                memcpy(dst, &cur, sizeof(cur));
            }
}

/* Rows of the kernel in blocks of IB (<= 8) so that NF*KW*IB accumulators fit. */
static inline __attribute__((always_inline)) AIRI_ATTR void
AIRI_NAME(airi_dw_rows_)(const float* xp, const float* dT, float* dwt, ptrdiff_t n,
                         ptrdiff_t C, ptrdiff_t Hp, ptrdiff_t Wp, ptrdiff_t F,
                         ptrdiff_t kh, ptrdiff_t c, ptrdiff_t f0, const int NF,
                         const int KW)
{
    int ib = AIRI_DW_ACC / (NF * KW);
    if (ib < 1) ib = 1;
    if (ib > 8) ib = 8;
    ptrdiff_t i0 = 0;
#define AIRI_DW(IBC) AIRI_NAME(airi_dw_block_)(xp, dT, dwt, n, C, Hp, Wp, F, kh, c, f0, \
                                               i0, NF, KW, IBC)
    for (; i0 < kh;) {
        ptrdiff_t left = kh - i0;
        int b = left < ib ? (int)left : ib;
        switch (b) {
        case 8: AIRI_DW(8); break;
        case 7: AIRI_DW(7); break;
        case 6: AIRI_DW(6); break;
        case 5: AIRI_DW(5); break;
        case 4: AIRI_DW(4); break;
        case 3: AIRI_DW(3); break;
        case 2: AIRI_DW(2); break;
        default: AIRI_DW(1); b = 1; break;
        }
        i0 += b;
    }
#undef AIRI_DW
}

/* xp (n, C, Hp, Wp) padded chunk, dT (n, Ho, Wo, F) = dout transposed, dwt (C, kh, kw,
 * F) accumulated into; F % VL == 0; kw in {3, 5, 7} (returns 0 otherwise, 1 when done). */
AIRI_ATTR int
AIRI_NAME(airi_dw_chunk_)(const float* xp, const float* dT, float* dwt, ptrdiff_t n,
                          ptrdiff_t C, ptrdiff_t Hp, ptrdiff_t Wp, ptrdiff_t F,
                          ptrdiff_t kh, ptrdiff_t kw)
{
    if (kw != 3 && kw != 5 && kw != 7) return 0;
    /* two vectors of filters per block while their accumulators for one kernel row
     * fit the registers; one vector otherwise (and for the last VL filters) */
    const int nf = 2 * (int)kw <= AIRI_DW_ACC ? 2 : 1;
    for (ptrdiff_t c = 0; c < C; c++) {
        ptrdiff_t f0 = 0;
        for (; nf == 2 && f0 + 2 * AIRI_VL <= F; f0 += 2 * AIRI_VL) {
            if (kw == 3) AIRI_NAME(airi_dw_rows_)(xp, dT, dwt, n, C, Hp, Wp, F, kh, c, f0, 2, 3);
            else if (kw == 5) AIRI_NAME(airi_dw_rows_)(xp, dT, dwt, n, C, Hp, Wp, F, kh, c, f0, 2, 5);
            else AIRI_NAME(airi_dw_rows_)(xp, dT, dwt, n, C, Hp, Wp, F, kh, c, f0, 2, 7);
        }
        for (; f0 < F; f0 += AIRI_VL) {
            if (kw == 3) AIRI_NAME(airi_dw_rows_)(xp, dT, dwt, n, C, Hp, Wp, F, kh, c, f0, 1, 3);
            else if (kw == 5) AIRI_NAME(airi_dw_rows_)(xp, dT, dwt, n, C, Hp, Wp, F, kh, c, f0, 1, 5);
            else AIRI_NAME(airi_dw_rows_)(xp, dT, dwt, n, C, Hp, Wp, F, kh, c, f0, 1, 7);
        }
    }
    return 1;
}
