/* Fused MoE FFN for one layer: for each selected expert, over the tokens routed to it,
 *   y = down(silu(gate(x)) * up(x)),  out[token] += weight * y
 * x is quantized once for gate/up; gate and up rows run in one pool pass, down in a second.
 * This entry point (the PyTorch path's) allocates its scratch per call; the MoE step (moe_step.c) runs the same
 * expert_rows on a workspace allocated once. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "matmul.h"
#include "moe.h"
#include "threadpool.h"

typedef struct {
    const qtype_kernels *k[2]; const uint8_t *w[2]; float *y[2];
    size_t w_row_bytes[2];
    const uint8_t *act; size_t act_row_bytes;
    int n_rows, n_cols, n_tokens, tasks_per_matrix, rows_per_task;
} pair_job;

static void pair_task(void *ctx, int task) {
    const pair_job *j = ctx;
    const int m = task >= j->tasks_per_matrix, r0 = (task - m * j->tasks_per_matrix) * j->rows_per_task;
    const int r1 = r0 + j->rows_per_task < j->n_rows ? r0 + j->rows_per_task : j->n_rows;
    rows_dot(j->k[m], j->w[m], j->w_row_bytes[m], r0, r1, j->n_cols, j->act, j->act_row_bytes, j->n_tokens,
             j->y[m], j->n_rows);
}

static void gate_up(const expert_mats *m, const uint8_t *act, int n_tok, float *g, float *u, int n_threads) {
    const int per = rows_per_task(m->d_ff, n_threads), tasks = (m->d_ff + per - 1) / per;
    pair_job j = { { m->kg, m->ku }, { m->gate, m->up }, { g, u },
                   { (size_t)(m->d_model / m->kg->block) * m->kg->type_size,
                     (size_t)(m->d_model / m->ku->block) * m->ku->type_size },
                   act, act_row_bytes(m->kg->act, m->d_model), m->d_ff, m->d_model, n_tok, tasks, per };
    pool_run(pair_task, &j, 2 * tasks, n_threads);
}

static void swiglu(float *g, const float *u, size_t n) {
    for (size_t i = 0; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

static void gather_rows(uint8_t *dst, const uint8_t *src, size_t row_bytes, const int32_t *rows, int n) {
    for (int i = 0; i < n; i++) memcpy(dst + (size_t)i * row_bytes, src + (size_t)rows[i] * row_bytes, row_bytes);
}

static int check_args(const moe_args *a, const qtype_kernels *kg, const qtype_kernels *ku, const qtype_kernels *kd) {
    /* so no caller can make the loops below index past x, out, the [n_tokens]-row scratch buffers or the weight
     * rows; one pass over offsets and rows, which the Python wrapper leaves to this check (it checks buffer sizes
     * and array lengths, which C cannot see, and names the bad value when this refuses one) */
    if (a->n_tokens < 0 || a->d_model <= 0 || a->d_ff <= 0 || a->n_experts < 0) return -4;
    if (a->d_model % kg->block || a->d_model % ku->block || a->d_ff % kd->block) return -4;
    if (a->d_ff % kg->row_group || a->d_ff % ku->row_group || a->d_model % kd->row_group) return -4;
    if (a->n_experts > 0 && a->offsets[0] != 0) return -4;
    for (int e = 0; e < a->n_experts; e++)
        if (a->offsets[e + 1] < a->offsets[e] || a->offsets[e + 1] - a->offsets[e] > a->n_tokens) return -4;
    for (int i = 0, n = a->n_experts ? a->offsets[a->n_experts] : 0; i < n; i++)
        if (a->tokens[i] < 0 || a->tokens[i] >= a->n_tokens) return -4;
    return 0;
}

void expert_rows(const expert_mats *m, const uint8_t *act_all, const int32_t *rows, int n, const expert_scratch *s,
                 int n_threads) {
    const size_t in_bytes = act_row_bytes(m->kg->act, m->d_model), mid_bytes = act_row_bytes(m->kd->act, m->d_ff);
    const uint8_t *act = act_all;
    if (rows) {
        gather_rows(s->act, act_all, in_bytes, rows, n);
        act = s->act;
    }
    gate_up(m, act, n, s->g, s->u, n_threads);
    swiglu(s->g, s->u, (size_t)n * m->d_ff);
    for (int t = 0; t < n; t++)
        quantize_act_row(m->kd->act, s->g + (size_t)t * m->d_ff, s->act_mid + (size_t)t * mid_bytes, m->d_ff);
    matmul_prequantized(m->kd, m->down, m->d_model, m->d_ff, s->act_mid, n, s->y, m->d_model, n_threads);
}

int moe_ffn(const moe_args *a) {
    const qtype_kernels *kg = kernels_for(a->gate_type), *ku = kernels_for(a->up_type), *kd = kernels_for(a->down_type);
    if (!kg || !ku || !kd) return -1;
    if (kg->act != ku->act) return -3;
    const int bad = check_args(a, kg, ku, kd);
    if (bad || a->n_tokens == 0 || a->n_experts == 0) return bad;  /* nothing routed: out stays as it is */
    const size_t in_bytes = act_row_bytes(kg->act, a->d_model), mid_bytes = act_row_bytes(kd->act, a->d_ff);
    uint8_t *act_all = quantize_acts(kg->act, a->x, a->n_tokens, a->d_model, a->n_threads);
    expert_scratch s = { malloc(in_bytes * a->n_tokens + 64), malloc(mid_bytes * a->n_tokens + 64),
                         malloc(sizeof(float) * a->d_ff * a->n_tokens), malloc(sizeof(float) * a->d_ff * a->n_tokens),
                         malloc(sizeof(float) * a->d_model * a->n_tokens) };
    int rc = (act_all && s.act && s.act_mid && s.g && s.u && s.y) ? 0 : -2;
    for (int e = 0; rc == 0 && e < a->n_experts; e++) {
        const int32_t *rows = a->tokens + a->offsets[e];
        const int n_tok = a->offsets[e + 1] - a->offsets[e];
        if (n_tok == 0) continue;
        const expert_mats m = { kg, ku, kd, a->gate[e], a->up[e], a->down[e], a->d_model, a->d_ff };
        expert_rows(&m, act_all, rows, n_tok, &s, a->n_threads);
        for (int t = 0; t < n_tok; t++) {
            float *o = a->out + (size_t)rows[t] * a->d_model;
            const float wt = a->weights[a->offsets[e] + t], *yt = s.y + (size_t)t * a->d_model;
            for (int i = 0; i < a->d_model; i++) o[i] += wt * yt[i];
        }
    }
    free(act_all); free(s.act); free(s.act_mid); free(s.g); free(s.u); free(s.y);
    return rc;
}
