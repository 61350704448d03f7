/* Native MoE step (see moe_step.c): ffn_norm, router, top-k, grouping, the routed experts batch by batch as their
 * weights become ready, the shared expert and the residual add, on a workspace that grows and is never freed
 * between calls. */
#ifndef MOESTREAM_MOE_STEP_H
#define MOESTREAM_MOE_STEP_H
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

typedef struct { int type; const uint8_t *w; } moe_mat;  /* a weight in a ggml type; the layer gives its shape */

/* One MoE layer's fixed arguments, checked once by moe_layer_check (the Python side keeps every buffer alive). */
typedef struct {
    int d_model, n_experts, k, normalize;  /* normalize: rescale the top-k probabilities to sum to 1 */
    float eps;                             /* ffn_norm's */
    const float *norm;                     /* ffn_norm weight [d_model] */
    moe_mat router;                        /* ffn_gate_inp [n_experts, d_model]; any type of the kernel table */
    int scoring;                           /* router logits -> scores: 0 softmax, 1 sigmoid */
    const float *sel_bias;                 /* [n_experts] added to the scores to choose (not to weigh); or NULL */
    float scale;                           /* the chosen experts' weights are multiplied by this (after normalize) */
    int n_groups, groups_used;             /* group-limited routing: choose from the groups_used best of n_groups */
    int d_ff_shared;                       /* 0: no shared expert */
    int shared_gated;                      /* 1: the shared expert is scaled by sigmoid(xn . shared_gate_inp) */
    moe_mat shared_gate_inp;               /* ffn_gate_inp_shexp [1, d_model] (when shared_gated) */
    moe_mat shared[3];                     /* ffn_{gate,up}_shexp [d_ff_shared, d_model], ffn_down_shexp [d_model, F] */
} moe_layer;

typedef struct { void *p; size_t cap; } moe_buf;  /* grow-only; contents are not kept when it grows */

/* Buffers sized by the largest step seen, plus the state of the layer being computed (route -> experts). */
typedef struct {
    pthread_mutex_t lock;     /* one call at a time (a call from a second thread waits) */
    const moe_layer *layer;   /* the layer routed last; NULL before the first route */
    int n_tokens, n_groups, n_done, shared_done;
    int act_kind;             /* format act_x holds xn in; -1: none yet this step */
    moe_buf xn, act_x, act_r, logits, choice, picked, ids, probs, weights, counts, experts, offsets, pairs, done, shared_w,
            rows, tokens, s_act, s_mid, s_g, s_u, s_y;
} moe_workspace;

/* Experts of one batch (all of one set of types): items holds 4 values per expert: its index into the routed
 * experts (the list moe_route returned), then the addresses of its gate, up and down weights. */
typedef struct {
    int gate_type, up_type, down_type, d_ff, n;
    const uint64_t *items;
} moe_batch;

/* 0 ok, -1 a type without a kernel, -3 gate and up of the shared expert take different activation formats,
 * -4 inconsistent sizes or a missing buffer */
int moe_layer_check(const moe_layer *L);

moe_workspace *moe_workspace_new(void);
void moe_workspace_free(moe_workspace *ws);
void moe_workspace_poison(moe_workspace *ws);  /* tests: NaN into every float buffer, so unwritten values show */

/* x [n_tokens, d_model] -> routes (kept in ws) and the number of distinct experts chosen (ws->experts holds them,
 * ascending), or < 0: -2 out of memory, -4 n_tokens < 1. ids_out (int64) and probs_out (float32), [n_tokens, k]
 * each, get the choices and their scores (softmax or sigmoid, before the bias, renormalising and scale) when not
 * NULL. */
int moe_route(const moe_layer *L, moe_workspace *ws, const float *x, int n_tokens, int64_t *ids_out, float *probs_out,
              int n_threads);

/* The experts of one batch (the first call also runs the shared expert). Returns 1 once every routed expert has been
 * computed, having written out [n_tokens, d_model] = x + sum of the k weighted experts (+ the gated shared expert),
 * summed in slot order whatever order the batches came in; 0 while experts are missing; < 0 on error: -1, -3 (gate
 * and up formats differ), -4 (sizes, an index out of range, out overlapping x), -5 (no route of this layer with
 * n_tokens rows to compute). */
int moe_experts(const moe_layer *L, moe_workspace *ws, const moe_batch *b, const float *x, float *out, int n_tokens,
                int n_threads);

/* Expert sharding: another process computes some of the routed experts. moe_route_export copies the routed layer's
 * normed input xn [n_tokens, d_model] and the pairs' routing weights [n_tokens * k] out; moe_import_rows writes the
 * weighted rows of the expert groups `groups` (indices into the routed experts): rows holds, group after group in
 * that order, one row per pair of the group in the route's pair order (token order), as moe_experts would have
 * written them; a later moe_experts call (an empty batch will do) then completes the step. Both return 0, or -5 (no
 * route of this layer with n_tokens rows), -4 (a group out of range, or n_rows not the groups' pair count). */
int moe_route_export(const moe_layer *L, moe_workspace *ws, int n_tokens, float *xn_out, float *weights_out);
int moe_import_rows(const moe_layer *L, moe_workspace *ws, int n_tokens, const int32_t *groups, int n_groups,
                    const float *rows, int n_rows);
#endif
