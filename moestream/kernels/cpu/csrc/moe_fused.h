/* Several ready experts of one MoE layer in three pool jobs in all (gate+up of every expert, then SwiGLU and
 * quantization of every row, then down of every expert) instead of two per expert: at one decode token a
 * Qwen3-30B-shaped layer has 8 experts of 768 x 2048, ~1 MiB per matrix, where a pool hand-over per matrix costs
 * about as much as the matrix. Same rows_dot calls on the same inputs as expert_rows, so bit-identical to it. */
#ifndef MOESTREAM_MOE_FUSED_H
#define MOESTREAM_MOE_FUSED_H
#include <stdint.h>

#include "moe.h"

#define FUSE_MAX_ROWS 64  /* fused while a batch's (token, slot) rows are at most this many */

typedef struct {
    const uint8_t *gate, *up, *down;  /* this expert's weights (types and sizes: the expert_mats) */
    const int32_t *pairs;             /* its (token * k + slot) pairs, in order */
    int n;                            /* how many */
} fused_expert;

/* For each expert e and pair p of it: rows_out[p] = weights[p] * FFN_e(act_tokens[p / k]). The experts' rows
 * total at most FUSE_MAX_ROWS; s has room for that many rows. */
void experts_fused(const expert_mats *m, const fused_expert *ex, int n_experts, int k, const uint8_t *act_tokens,
                   const expert_scratch *s, const float *weights, float *rows_out, int n_threads);
#endif
