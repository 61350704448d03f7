/* See moe_fused.h. */
#include "moe_fused.h"

#include <math.h>
#include <string.h>

#include "matmul.h"
#include "threadpool.h"

typedef struct {
    const expert_mats *m;
    const fused_expert *ex;
    int row0[FUSE_MAX_ROWS + 1];  /* expert e's first scratch row */
    int per_gate, per_down;       /* rows per task (rows_per_task) */
    int tasks_gate, tasks_down;   /* per expert: gate (as many again for up), down */
    size_t in_bytes, mid_bytes;
    const expert_scratch *s;
} fused_job;

static int imin(int a, int b) { return a < b ? a : b; }

static size_t row_bytes(const qtype_kernels *k, int cols) { return (size_t)(cols / k->block) * k->type_size; }

static void gate_up_task(void *ctx, int task) {
    const fused_job *j = ctx;
    const expert_mats *m = j->m;
    const int e = task / (2 * j->tasks_gate), rest = task % (2 * j->tasks_gate), up = rest >= j->tasks_gate;
    const int r0 = (rest - up * j->tasks_gate) * j->per_gate, r1 = imin(r0 + j->per_gate, m->d_ff);
    const qtype_kernels *k = up ? m->ku : m->kg;
    const size_t first = (size_t)j->row0[e];
    rows_dot(k, up ? j->ex[e].up : j->ex[e].gate, row_bytes(k, m->d_model), r0, r1, m->d_model,
             j->s->act + first * j->in_bytes, j->in_bytes, j->ex[e].n, (up ? j->s->u : j->s->g) + first * m->d_ff,
             m->d_ff);
}

static void swiglu_task(void *ctx, int row) {
    /* silu(g) * u, then the down projection's activation format: expert_rows' arithmetic, row by row */
    const fused_job *j = ctx;
    const int F = j->m->d_ff;
    float *g = j->s->g + (size_t)row * F;
    const float *u = j->s->u + (size_t)row * F;
    for (int i = 0; i < F; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    quantize_act_row(j->m->kd->act, g, j->s->act_mid + (size_t)row * j->mid_bytes, F);
}

static void down_task(void *ctx, int task) {
    const fused_job *j = ctx;
    const expert_mats *m = j->m;
    const int e = task / j->tasks_down, r0 = (task % j->tasks_down) * j->per_down;
    const size_t first = (size_t)j->row0[e];
    rows_dot(m->kd, j->ex[e].down, row_bytes(m->kd, m->d_ff), r0, imin(r0 + j->per_down, m->d_model), m->d_ff,
             j->s->act_mid + first * j->mid_bytes, j->mid_bytes, j->ex[e].n, j->s->y + first * m->d_model,
             m->d_model);
}

void experts_fused(const expert_mats *m, const fused_expert *ex, int n_experts, int k, const uint8_t *act_tokens,
                   const expert_scratch *s, const float *weights, float *rows_out, int n_threads) {
    /* tasks sized as if each matrix were alone, so a batch of several has plenty for the pool to balance */
    const int per_gate = rows_per_task(m->d_ff, n_threads), per_down = rows_per_task(m->d_model, n_threads);
    fused_job j = { m, ex, { 0 }, per_gate, per_down, (m->d_ff + per_gate - 1) / per_gate,
                    (m->d_model + per_down - 1) / per_down, act_row_bytes(m->kg->act, m->d_model),
                    act_row_bytes(m->kd->act, m->d_ff), s };
    for (int e = 0; e < n_experts; e++) {  /* gather each pair's token row: rows of expert e from row0[e] on */
        j.row0[e + 1] = j.row0[e] + ex[e].n;
        for (int i = 0; i < ex[e].n; i++)
            memcpy(s->act + (size_t)(j.row0[e] + i) * j.in_bytes, act_tokens + (size_t)(ex[e].pairs[i] / k) * j.in_bytes,
                   j.in_bytes);
    }
    const int rows = j.row0[n_experts];
    pool_run(gate_up_task, &j, n_experts * 2 * j.tasks_gate, n_threads);
    pool_run(swiglu_task, &j, rows, rows >= 4 ? n_threads : 1);
    pool_run(down_task, &j, n_experts * j.tasks_down, n_threads);
    for (int e = 0; e < n_experts; e++)
        for (int i = 0; i < ex[e].n; i++) {
            const int p = ex[e].pairs[i];
            const float wt = weights[p], *y = s->y + (size_t)(j.row0[e] + i) * m->d_model;
            float *row = rows_out + (size_t)p * m->d_model;
            for (int c = 0; c < m->d_model; c++) row[c] = wt * y[c];
        }
}
