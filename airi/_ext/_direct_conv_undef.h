/* Clears the per-version settings of _direct_conv_body.h (see _direct_conv.h). */
#undef AIRI_SFX
#undef AIRI_ATTR
#undef AIRI_VEC
#undef AIRI_VL
#undef AIRI_FW_NF
#undef AIRI_FW_OB
#undef AIRI_OB1
#undef AIRI_DW_ACC
