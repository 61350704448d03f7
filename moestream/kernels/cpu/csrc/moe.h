#ifndef MOESTREAM_MOE_H
#define MOESTREAM_MOE_H
#include <stdint.h>

#include "kernels.h"

typedef struct {
    const float *x;              /* [n_tokens, d_model] */
    int n_tokens, d_model, d_ff;
    int gate_type, up_type, down_type;
    int n_experts;               /* experts selected in this layer */
    const uint8_t *const *gate, *const *up, *const *down; /* per selected expert: [d_ff, d_model] / [d_model, d_ff] */
    const int32_t *offsets;      /* [n_experts + 1] into tokens/weights */
    const int32_t *tokens;       /* token rows routed to each expert, concatenated */
    const float *weights;        /* router weight of each (expert, token) pair */
    float *out;                  /* [n_tokens, d_model], accumulated into */
    int n_threads;
} moe_args;

/* 0 ok, -1 unsupported type, -2 out of memory, -3 gate/up activation formats differ,
 * -4 invalid sizes, offsets or token rows (see check_args in moe.c) */
int moe_ffn(const moe_args *a);

/* The expert FFN both moe_ffn and the MoE step (moe_step.c) run, so that the two compute it bit for bit alike. */
typedef struct {
    const qtype_kernels *kg, *ku, *kd;  /* gate and up must take the same activation format */
    const uint8_t *gate, *up, *down;    /* [d_ff, d_model], [d_ff, d_model], [d_model, d_ff] */
    int d_model, d_ff;
} expert_mats;

/* Scratch for n token rows: act n x act_row_bytes(kg->act, d_model), act_mid n x act_row_bytes(kd->act, d_ff),
 * g and u [n, d_ff], y [n, d_model] (the result). */
typedef struct { uint8_t *act, *act_mid; float *g, *u, *y; } expert_scratch;

/* s->y[i] = down(silu(gate(x)) * up(x)) for x = row rows[i] of act_all (rows NULL: row i, read in place), i < n */
void expert_rows(const expert_mats *m, const uint8_t *act_all, const int32_t *rows, int n, const expert_scratch *s,
                 int n_threads);
#endif
