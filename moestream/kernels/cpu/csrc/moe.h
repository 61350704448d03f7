#ifndef MOESTREAM_MOE_H
#define MOESTREAM_MOE_H
#include <stdint.h>

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
#endif
