/* What the instruction-set versions of the direct convolution share: the vector types,
 * whether dispatch over instruction sets is possible with this compiler and CPU
 * family, and the entry points each version defines (private to the extension). */
#ifndef AIRI_DIRECT_CONV_ISA_H
#define AIRI_DIRECT_CONV_ISA_H

#include <stddef.h>

#if defined(__GNUC__)
/* GCC/clang vector extensions; one native register each: 16 floats (AVX-512),
 * 8 (AVX2), 4 (SSE2). GCC lowers each to whatever the function's target has. */
typedef float airi_v16sf __attribute__((vector_size(64)));
typedef float airi_v8sf __attribute__((vector_size(32)));
typedef float airi_v4sf __attribute__((vector_size(16)));
#define AIRI_HAVE_DIRECT 1
#else
#define AIRI_HAVE_DIRECT 0
#endif

/* AVX-512 and AVX2 versions exist on x86-64 with a compiler that has the target
 * attribute and __builtin_cpu_supports; elsewhere only the baseline version. No
 * -march=native: one build runs on any x86-64. */
#if AIRI_HAVE_DIRECT && defined(__x86_64__) && (defined(__clang__) || __GNUC__ >= 6)
#define AIRI_DISPATCH 1
#else
#define AIRI_DISPATCH 0
#endif

#define AIRI_DC_ENTRY_POINTS(sfx)                                                     \
    void airi_dc_sample_##sfx(const float* xp, const float* wt, const float* bias,    \
                              float* out, ptrdiff_t C, ptrdiff_t Hp, ptrdiff_t Wp,    \
                              ptrdiff_t F, ptrdiff_t kh, ptrdiff_t kw);               \
    int airi_dw_chunk_##sfx(const float* xp, const float* dT, float* dwt, ptrdiff_t n, \
                            ptrdiff_t C, ptrdiff_t Hp, ptrdiff_t Wp, ptrdiff_t F,     \
                            ptrdiff_t kh, ptrdiff_t kw);

#if AIRI_DISPATCH
AIRI_DC_ENTRY_POINTS(avx512)
AIRI_DC_ENTRY_POINTS(avx2)
#endif
#if AIRI_HAVE_DIRECT
AIRI_DC_ENTRY_POINTS(base)
#endif

#endif /* AIRI_DIRECT_CONV_ISA_H */
