/* The direct convolution for AVX-512 (see direct_conv.h): 32 registers of 16 floats,
 * blocks of 6 pixels x 32 filters or 12 pixels x 16 filters. */
#include "direct_conv_isa.h"

#if AIRI_DISPATCH
#define AIRI_SFX avx512
#define AIRI_ATTR __attribute__((target("avx512f,fma")))
#define AIRI_VEC airi_v16sf
#define AIRI_VL 16
#define AIRI_FW_NF 2
#define AIRI_FW_OB 6
#define AIRI_OB1 12
#define AIRI_DW_ACC 24
#include "direct_conv_body.h"
#else
typedef int airi_direct_conv_avx512_unused; /* ISO C: no empty translation unit */
#endif
