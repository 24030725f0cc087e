/* The direct convolution for AVX2 + FMA (see direct_conv.h): 16 registers of 8 floats,
 * blocks of 6 pixels x 16 filters or 12 pixels x 8 filters. */
#include "direct_conv_isa.h"

#if AIRI_DISPATCH
#define AIRI_SFX avx2
#define AIRI_ATTR __attribute__((target("avx2,fma")))
#define AIRI_VEC airi_v8sf
#define AIRI_VL 8
#define AIRI_FW_NF 2
#define AIRI_FW_OB 6
#define AIRI_OB1 12
#define AIRI_DW_ACC 12
#include "direct_conv_body.h"
#else
typedef int airi_direct_conv_avx2_unused; /* ISO C: no empty translation unit */
#endif
