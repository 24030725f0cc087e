/* The baseline direct convolution (see direct_conv.h): 16 registers of 4 floats, SSE2
 * on every x86-64, GCC's generic vector code on other CPUs. */
#include "direct_conv_isa.h"

#if AIRI_HAVE_DIRECT
#define AIRI_SFX base
#define AIRI_ATTR
#define AIRI_VEC airi_v4sf
#define AIRI_VL 4
#define AIRI_FW_NF 2
#define AIRI_FW_OB 6
#define AIRI_OB1 12
#define AIRI_DW_ACC 12
#include "direct_conv_body.h"
#else
typedef int airi_direct_conv_base_unused; /* ISO C: no empty translation unit */
#endif
