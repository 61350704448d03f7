/* Native MoE step for one layer, in 1 + (number of expert batches) calls:
 *   moe_route:   xn = rms_norm(x) * w; logits = router(xn); scores (softmax, or sigmoid); top-k (ties to the lower
 *                expert id) of the scores plus a selection bias, from the best expert groups only if there are
 *                groups (DeepSeek-V3's rule, layers/grouped_router.py), weighted by the unbiased scores,
 *                optionally renormalised, times a scale; pairs (token, slot) grouped by expert (a stable counting sort, so each expert's rows
 *                come in token order, as layers/experts.py's argsort); the shared expert's gate sigmoid(xn . w).
 *   moe_experts: per batch of ready experts, each expert's FFN (expert_rows, the code moe_ffn runs) over its rows,
 *                weighted and written to that pair's own row of a [T*k (+T shared), D] scratch; the last batch sums
 *                each token's rows in slot order (then the shared expert) and adds the residual: out = x + ...
 * Rules, and why:
 * - One scratch row per (token, slot), summed in a fixed order at the end: the output is bit-identical whatever
 *   order and grouping the expert batches arrive in (a cache miss changes both), as the streaming tests demand.
 * - The sum order is the PyTorch path's (view(T, k, D).sum(1), then + shared, then x +), and the routed experts run
 *   the same expert_rows as moe_ffn, so the two paths differ only in the rounding of the norm, the router and the
 *   shared expert's SiLU (torch's there).
 * - Nothing is allocated per call: buffers grow to the largest step seen and stay (decode reuses them as is).
 * - The router runs on our kernels, also when it is F32 (dot_f32): measured on the 2-core machine, one token,
 *   8 x 4096: 8 us native against 12 us for torch's BLAS (plus a call); at 512 tokens BLAS is 1.5-4x faster, a few
 *   ms per layer against the experts' hundreds. */
#include "moe_step.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "matmul.h"
#include "moe.h"
#include "moe_fused.h"
#include "threadpool.h"

#define MAX_GROUPS 256  /* expert groups a layer may have (DeepSeek-V3 has 8) */
#define PAR_MIN_TOKENS 8  /* fewer rows run on the calling thread (a pool hand-over costs more than the work) */
#define F(b) ((float *)(b).p)
#define I32(b) ((int32_t *)(b).p)

static int grow(moe_buf *b, size_t bytes) {
    if (bytes <= b->cap) return 0;
    free(b->p);
    b->p = malloc(bytes + 64);
    b->cap = b->p ? bytes : 0;
    return b->p ? 0 : -2;
}

static int mat_ok(moe_mat m, int rows, int cols) {
    const qtype_kernels *k = kernels_for(m.type);
    return !k ? -1 : (!m.w || cols % k->block || rows % k->row_group) ? -4 : 0;
}

int moe_layer_check(const moe_layer *L) {
    if (L->d_model <= 0 || L->n_experts <= 0 || L->k < 1 || L->k > L->n_experts || !L->norm) return -4;
    if (!(L->eps >= 0.0f) || L->d_ff_shared < 0 || (L->scoring != 0 && L->scoring != 1)) return -4;
    if (!isfinite(L->scale) || L->n_groups < 1 || L->n_groups > MAX_GROUPS || L->n_experts % L->n_groups || L->groups_used < 1
        || L->groups_used > L->n_groups || L->k > L->groups_used * (L->n_experts / L->n_groups))
        return -4;
    int rc = mat_ok(L->router, L->n_experts, L->d_model);
    if (rc || !L->d_ff_shared) return rc;
    const int F = L->d_ff_shared, D = L->d_model;
    if ((L->shared_gated && (rc = mat_ok(L->shared_gate_inp, 1, D))) || (rc = mat_ok(L->shared[0], F, D))
        || (rc = mat_ok(L->shared[1], F, D)) || (rc = mat_ok(L->shared[2], D, F)))
        return rc;
    return kernels_for(L->shared[0].type)->act == kernels_for(L->shared[1].type)->act ? 0 : -3;
}

moe_workspace *moe_workspace_new(void) {
    moe_workspace *ws = calloc(1, sizeof *ws);
    if (ws) pthread_mutex_init(&ws->lock, NULL);
    return ws;
}

void moe_workspace_free(moe_workspace *ws) {
    moe_buf *all[] = { &ws->xn, &ws->act_x, &ws->act_r, &ws->logits, &ws->choice, &ws->picked, &ws->ids, &ws->probs, &ws->weights,
                       &ws->counts, &ws->experts, &ws->offsets, &ws->pairs, &ws->done, &ws->shared_w, &ws->rows,
                       &ws->tokens, &ws->s_act, &ws->s_mid, &ws->s_g, &ws->s_u, &ws->s_y };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) free(all[i]->p);
    pthread_mutex_destroy(&ws->lock);
    free(ws);
}

void moe_workspace_poison(moe_workspace *ws) {
    moe_buf *f[] = { &ws->xn, &ws->act_x, &ws->act_r, &ws->logits, &ws->choice, &ws->probs, &ws->weights, &ws->shared_w,
                     &ws->rows, &ws->s_act, &ws->s_mid, &ws->s_g, &ws->s_u, &ws->s_y };
    pthread_mutex_lock(&ws->lock);
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (f[i]->p) memset(f[i]->p, 0xff, f[i]->cap);  /* 0xffffffff is a NaN */
    ws->act_kind = -1;
    pthread_mutex_unlock(&ws->lock);
}

/* ---- route ------------------------------------------------------------------------------------------------ */

static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

static int reserve_route(moe_workspace *ws, const moe_layer *L, int T) {
    const size_t D = L->d_model, E = L->n_experts, TK = (size_t)T * L->k;
    size_t act = act_row_bytes(kernels_for(L->router.type)->act, L->d_model);
    if (L->d_ff_shared && L->shared_gated)
        act = max_sz(act, act_row_bytes(kernels_for(L->shared_gate_inp.type)->act, L->d_model));
    const size_t n_rows = TK + (L->d_ff_shared ? (size_t)T : 0);
    return grow(&ws->xn, T * D * 4) | grow(&ws->act_r, T * act) | grow(&ws->logits, T * E * 4) | grow(&ws->choice, E * 4)
         | grow(&ws->picked, E)
         | grow(&ws->ids, TK * 4) | grow(&ws->probs, TK * 4) | grow(&ws->weights, TK * 4) | grow(&ws->counts, E * 4)
         | grow(&ws->experts, E * 4) | grow(&ws->offsets, (E + 1) * 4) | grow(&ws->pairs, TK * 4) | grow(&ws->done, E)
         | grow(&ws->shared_w, (size_t)T * 4) | grow(&ws->rows, n_rows * D * 4);
}

typedef struct { const float *x, *w; float *y; int d; float eps; } norm_job;

static void norm_row(void *ctx, int t) {
    /* y = w * (x * rsqrt(mean(x^2) + eps)), in the order of layers/norm.py */
    const norm_job *j = ctx;
    const float *x = j->x + (size_t)t * j->d;
    float *y = j->y + (size_t)t * j->d;
    double ss = 0.0;
    for (int i = 0; i < j->d; i++) ss += (double)x[i] * x[i];
    const float r = 1.0f / sqrtf((float)(ss / j->d) + j->eps);
    for (int i = 0; i < j->d; i++) y[i] = j->w[i] * (x[i] * r);
}

static const uint8_t *xn_as(moe_workspace *ws, moe_buf *buf, enum act_kind act, int T, int D, int n_threads) {
    /* xn in the activation format `act` (F32: xn itself) */
    if (act == ACT_F32) return ws->xn.p;
    quantize_acts_into(act, F(ws->xn), T, D, buf->p, n_threads);
    return buf->p;
}

static void project(moe_workspace *ws, moe_mat m, int rows, int T, int D, float *y, int n_threads) {
    /* y [T, rows] = xn . m^T */
    const qtype_kernels *k = kernels_for(m.type);
    matmul_prequantized(k, m.w, rows, D, xn_as(ws, &ws->act_r, k->act, T, D, n_threads), T, y, rows, n_threads);
}

static void softmax(float *p, int n) {
    float m = p[0], sum = 0.0f;
    for (int i = 1; i < n; i++) m = p[i] > m ? p[i] : m;
    for (int i = 0; i < n; i++) sum += (p[i] = expf(p[i] - m));
    for (int i = 0; i < n; i++) p[i] /= sum;
}

static void sigmoid(float *p, int n) {
    for (int i = 0; i < n; i++) p[i] = 1.0f / (1.0f + expf(-p[i]));
}

static float best_two(const float *c, int n) {
    /* sum of the two largest of c[0..n) (the one value when n is 1); NaNs never win */
    float a = -INFINITY, b = -INFINITY;
    for (int i = 0; i < n; i++) {
        if (c[i] > a) b = a, a = c[i];
        else if (c[i] > b) b = c[i];
    }
    return n > 1 ? a + b : a;
}

static void exclude_groups(const moe_layer *L, const float *choice, uint8_t *picked) {
    /* mark every expert outside the groups_used best groups as taken (ties to the lower group) */
    float score[MAX_GROUPS];
    uint8_t keep[MAX_GROUPS] = { 0 };
    const int G = L->n_groups, n = L->n_experts / G;
    for (int g = 0; g < G; g++) score[g] = best_two(choice + (size_t)g * n, n);
    for (int j = 0; j < L->groups_used; j++) {
        int best = -1;
        for (int g = 0; g < G; g++)
            if (!keep[g] && (best < 0 || score[g] > score[best])) best = g;
        keep[best] = 1;
    }
    for (int g = 0; g < G; g++)
        if (!keep[g]) memset(picked + (size_t)g * n, 1, (size_t)n);
}

static void top_k(const moe_layer *L, const float *p, float *choice, uint8_t *picked, int32_t *ids, float *probs,
                  float *weights) {
    /* the k largest of p + sel_bias (in the best groups), largest first, weighted by p; a NaN never wins a
     * comparison, so every id is valid whatever p holds */
    const int E = L->n_experts;
    const float *c = p;
    if (L->sel_bias) {
        for (int e = 0; e < E; e++) choice[e] = p[e] + L->sel_bias[e];
        c = choice;
    }
    memset(picked, 0, (size_t)E);
    if (L->n_groups > 1) exclude_groups(L, c, picked);
    float sum = 0.0f;
    for (int j = 0; j < L->k; j++) {
        int best = -1;
        for (int e = 0; e < E; e++)
            if (!picked[e] && (best < 0 || c[e] > c[best])) best = e;
        picked[best] = 1;
        ids[j] = best;
        sum += (probs[j] = p[best]);
    }
    for (int j = 0; j < L->k; j++) {
        const float w = L->normalize ? probs[j] / sum : probs[j];
        weights[j] = L->scale != 1.0f ? w * L->scale : w;
    }
}

static int group(moe_workspace *ws, int E, int TK) {
    /* pairs sorted by expert, stable in pair order; returns the number of distinct experts */
    int32_t *counts = I32(ws->counts), *experts = I32(ws->experts), *offsets = I32(ws->offsets);
    const int32_t *ids = I32(ws->ids);
    int n = 0;
    memset(counts, 0, (size_t)E * 4);
    for (int p = 0; p < TK; p++) counts[ids[p]]++;
    offsets[0] = 0;
    for (int e = 0; e < E; e++) {
        if (!counts[e]) continue;
        experts[n] = e;
        offsets[n + 1] = offsets[n] + counts[e];
        counts[e] = offsets[n++];  /* from here on: where e's next pair goes */
    }
    for (int p = 0; p < TK; p++) I32(ws->pairs)[counts[ids[p]]++] = p;
    return n;
}

static void shared_gate(const moe_layer *L, moe_workspace *ws, int T, int n_threads) {
    float *g = F(ws->shared_w);
    if (!L->shared_gated) {  /* DeepSeek's and GLM's shared expert is added as it is */
        for (int t = 0; t < T; t++) g[t] = 1.0f;
        return;
    }
    project(ws, L->shared_gate_inp, 1, T, L->d_model, g, n_threads);
    for (int t = 0; t < T; t++) g[t] = 1.0f / (1.0f + expf(-g[t]));
}

static void tap(const moe_workspace *ws, int TK, int64_t *ids_out, float *probs_out) {
    for (int p = 0; ids_out && p < TK; p++) ids_out[p] = I32(ws->ids)[p];
    if (probs_out) memcpy(probs_out, ws->probs.p, (size_t)TK * 4);
}

int moe_route(const moe_layer *L, moe_workspace *ws, const float *x, int T, int64_t *ids_out, float *probs_out,
              int n_threads) {
    if (T < 1) return -4;
    pthread_mutex_lock(&ws->lock);
    ws->layer = NULL;  /* until this route is complete */
    const int D = L->d_model, E = L->n_experts, K = L->k;
    int rc = reserve_route(ws, L, T);
    if (rc == 0) {
        norm_job nj = { x, L->norm, F(ws->xn), D, L->eps };
        pool_run(norm_row, &nj, T, T >= PAR_MIN_TOKENS ? n_threads : 1);
        project(ws, L->router, E, T, D, F(ws->logits), n_threads);
        for (int t = 0; t < T; t++) {
            float *p = F(ws->logits) + (size_t)t * E;
            if (L->scoring) sigmoid(p, E);
            else softmax(p, E);
            top_k(L, p, F(ws->choice), ws->picked.p, I32(ws->ids) + t * K, F(ws->probs) + t * K,
                  F(ws->weights) + t * K);
        }
        if (L->d_ff_shared) shared_gate(L, ws, T, n_threads);
        tap(ws, T * K, ids_out, probs_out);
        rc = ws->n_groups = group(ws, E, T * K);
        memset(ws->done.p, 0, (size_t)E);
        ws->n_tokens = T, ws->n_done = 0, ws->shared_done = !L->d_ff_shared, ws->act_kind = -1, ws->layer = L;
    }
    pthread_mutex_unlock(&ws->lock);
    return rc;
}

/* ---- experts ---------------------------------------------------------------------------------------------- */

static int reserve_scratch(moe_workspace *ws, const expert_mats *m, int rows) {
    const size_t in = act_row_bytes(m->kg->act, m->d_model), mid = act_row_bytes(m->kd->act, m->d_ff);
    return grow(&ws->s_act, rows * in) | grow(&ws->s_mid, rows * mid) | grow(&ws->s_g, (size_t)rows * m->d_ff * 4)
         | grow(&ws->s_u, (size_t)rows * m->d_ff * 4) | grow(&ws->s_y, (size_t)rows * m->d_model * 4)
         | grow(&ws->tokens, (size_t)rows * 4);
}

static int reserve_experts(moe_workspace *ws, const expert_mats *m, int T) {
    const size_t in = act_row_bytes(m->kg->act, m->d_model);
    if (ws->act_x.cap < T * in) ws->act_kind = -1;  /* grown: what it held is gone */
    return grow(&ws->act_x, T * in) | reserve_scratch(ws, m, T);
}

static const uint8_t *acts_for(moe_workspace *ws, enum act_kind act, int n_threads) {
    /* xn in `act`'s format, quantized once per step and format */
    if (ws->act_kind != (int)act) {
        quantize_acts_into(act, F(ws->xn), ws->n_tokens, ws->layer->d_model, ws->act_x.p, n_threads);
        ws->act_kind = act;
    }
    return ws->act_x.p;
}

static expert_scratch scratch(const moe_workspace *ws) {
    return (expert_scratch){ ws->s_act.p, ws->s_mid.p, F(ws->s_g), F(ws->s_u), F(ws->s_y) };
}

static void run_shared(const moe_layer *L, moe_workspace *ws, const expert_mats *m, int n_threads) {
    /* rows T*k .. T*k+T-1 of the scratch: sigmoid gate x shared FFN, for every token */
    const int T = ws->n_tokens, D = L->d_model;
    const expert_scratch s = scratch(ws);
    expert_rows(m, acts_for(ws, m->kg->act, n_threads), NULL, T, &s, n_threads);
    float *rows = F(ws->rows) + (size_t)T * L->k * D;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < D; i++) rows[(size_t)t * D + i] = F(ws->shared_w)[t] * s.y[(size_t)t * D + i];
    ws->shared_done = 1;
}

static void run_group(moe_workspace *ws, const expert_mats *m, int g, int n_threads) {
    /* expert group g over its pairs; pair p = t*k + slot goes to scratch row p, times its routing weight */
    const int K = ws->layer->k, D = m->d_model, off = I32(ws->offsets)[g], n = I32(ws->offsets)[g + 1] - off;
    const int32_t *pairs = I32(ws->pairs) + off;
    for (int i = 0; i < n; i++) I32(ws->tokens)[i] = pairs[i] / K;
    const expert_scratch s = scratch(ws);
    expert_rows(m, acts_for(ws, m->kg->act, n_threads), I32(ws->tokens), n, &s, n_threads);
    for (int i = 0; i < n; i++) {
        float *row = F(ws->rows) + (size_t)pairs[i] * D;
        const float wt = F(ws->weights)[pairs[i]], *y = s.y + (size_t)i * D;
        for (int j = 0; j < D; j++) row[j] = wt * y[j];
    }
    ws->n_done += !((uint8_t *)ws->done.p)[g];
    ((uint8_t *)ws->done.p)[g] = 1;
}

static int fused_rows(const moe_workspace *ws, const moe_batch *b) {
    /* the batch's (token, slot) rows if it is worth one set of pool jobs for all its experts (moe_fused.h), else 0 */
    if (b->n < 2 || b->n > FUSE_MAX_ROWS) return 0;
    int rows = 0;
    for (int i = 0; i < b->n; i++) {
        const int g = (int)b->items[4 * i];
        rows += I32(ws->offsets)[g + 1] - I32(ws->offsets)[g];
    }
    return rows <= FUSE_MAX_ROWS ? rows : 0;
}

static void run_fused(moe_workspace *ws, const expert_mats *m, const moe_batch *b, int n_threads) {
    fused_expert ex[FUSE_MAX_ROWS];
    for (int i = 0; i < b->n; i++) {
        const uint64_t *it = b->items + 4 * i;
        const int g = (int)it[0], off = I32(ws->offsets)[g];
        ex[i] = (fused_expert){ (const uint8_t *)(uintptr_t)it[1], (const uint8_t *)(uintptr_t)it[2],
                                (const uint8_t *)(uintptr_t)it[3], I32(ws->pairs) + off, I32(ws->offsets)[g + 1] - off };
    }
    const expert_scratch s = scratch(ws);
    experts_fused(m, ex, b->n, ws->layer->k, acts_for(ws, m->kg->act, n_threads), &s, F(ws->weights), F(ws->rows),
                  n_threads);
    for (int i = 0; i < b->n; i++) {
        const int g = (int)b->items[4 * i];
        ws->n_done += !((uint8_t *)ws->done.p)[g];
        ((uint8_t *)ws->done.p)[g] = 1;
    }
}

typedef struct { const float *x, *rows; float *out; int D, K, T, shared; } combine_job;

static void combine_row(void *ctx, int t) {
    /* out = x + (((s_0 + s_1) + ...) + shared), the PyTorch path's order */
    const combine_job *j = ctx;
    const size_t D = j->D;
    float *o = j->out + t * D;
    const float *r = j->rows + (size_t)t * j->K * D, *x = j->x + t * D;
    memcpy(o, r, D * 4);
    for (int s = 1; s < j->K; s++)
        for (size_t i = 0; i < D; i++) o[i] += r[s * D + i];
    if (j->shared) {
        const float *sh = j->rows + ((size_t)j->T * j->K + t) * D;
        for (size_t i = 0; i < D; i++) o[i] += sh[i];
    }
    for (size_t i = 0; i < D; i++) o[i] = x[i] + o[i];
}

static int mats(const moe_batch *b, int D, expert_mats *m) {
    /* the batch's kernels and sizes, checked (the weight addresses are filled in per expert) */
    *m = (expert_mats){ kernels_for(b->gate_type), kernels_for(b->up_type), kernels_for(b->down_type), 0, 0, 0, D,
                        b->d_ff };
    if (!m->kg || !m->ku || !m->kd) return -1;
    if (m->kg->act != m->ku->act) return -3;
    if (b->d_ff % m->kg->row_group || b->d_ff % m->ku->row_group || D % m->kd->row_group) return -4;
    return b->d_ff <= 0 || b->n < 0 || D % m->kg->block || D % m->ku->block || b->d_ff % m->kd->block ? -4 : 0;
}

static expert_mats shared_mats(const moe_layer *L) {
    return (expert_mats){ kernels_for(L->shared[0].type), kernels_for(L->shared[1].type),
                          kernels_for(L->shared[2].type), L->shared[0].w, L->shared[1].w, L->shared[2].w,
                          L->d_model, L->d_ff_shared };
}

static int check_batch(const moe_workspace *ws, const moe_batch *b, const float *x, const float *out) {
    const size_t bytes = (size_t)ws->n_tokens * ws->layer->d_model * 4;
    if ((const char *)out < (const char *)x + bytes && (const char *)x < (const char *)out + bytes) return -4;
    for (int i = 0; i < b->n; i++) {
        const uint64_t *it = b->items + 4 * i;
        if (it[0] >= (uint64_t)ws->n_groups || !it[1] || !it[2] || !it[3]) return -4;
    }
    return 0;
}

static int experts_locked(const moe_layer *L, moe_workspace *ws, const moe_batch *b, const float *x, float *out,
                          int n_threads) {
    expert_mats m, sh = shared_mats(L);
    int rc = mats(b, L->d_model, &m);
    if (rc || (rc = check_batch(ws, b, x, out))) return rc;
    if ((rc = reserve_experts(ws, &m, ws->n_tokens))) return rc;
    if (L->d_ff_shared && (rc = reserve_experts(ws, &sh, ws->n_tokens))) return rc;
    if (!ws->shared_done) run_shared(L, ws, &sh, n_threads);
    if ((rc = fused_rows(ws, b)) > 0) {
        if ((rc = reserve_scratch(ws, &m, rc))) return rc;
        run_fused(ws, &m, b, n_threads);
    } else for (int i = 0; i < b->n; i++) {
        const uint64_t *it = b->items + 4 * i;
        m.gate = (const uint8_t *)(uintptr_t)it[1], m.up = (const uint8_t *)(uintptr_t)it[2];
        m.down = (const uint8_t *)(uintptr_t)it[3];
        run_group(ws, &m, (int)it[0], n_threads);
    }
    if (ws->n_done < ws->n_groups) return 0;
    combine_job cj = { x, F(ws->rows), out, L->d_model, L->k, ws->n_tokens, L->d_ff_shared > 0 };
    pool_run(combine_row, &cj, ws->n_tokens, ws->n_tokens >= PAR_MIN_TOKENS ? n_threads : 1);
    return 1;
}

int moe_experts(const moe_layer *L, moe_workspace *ws, const moe_batch *b, const float *x, float *out, int T,
                int n_threads) {
    pthread_mutex_lock(&ws->lock);
    const int rc = ws->layer != L || ws->n_tokens != T ? -5 : experts_locked(L, ws, b, x, out, n_threads);
    pthread_mutex_unlock(&ws->lock);
    return rc;
}

/* ---- experts computed elsewhere (expert sharding: moestream/shard/) ---------------------------------------- */

int moe_route_export(const moe_layer *L, moe_workspace *ws, int T, float *xn_out, float *weights_out) {
    pthread_mutex_lock(&ws->lock);
    const int rc = ws->layer != L || ws->n_tokens != T ? -5 : 0;
    if (!rc) {
        memcpy(xn_out, ws->xn.p, (size_t)T * L->d_model * 4);
        memcpy(weights_out, ws->weights.p, (size_t)T * L->k * 4);
    }
    pthread_mutex_unlock(&ws->lock);
    return rc;
}

static int import_locked(const moe_layer *L, moe_workspace *ws, const int32_t *groups, int n_groups,
                         const float *rows, int n_rows) {
    int total = 0;
    for (int i = 0; i < n_groups; i++) {  /* every index checked, and the rows counted, before one is written */
        if (groups[i] < 0 || groups[i] >= ws->n_groups) return -4;
        total += I32(ws->offsets)[groups[i] + 1] - I32(ws->offsets)[groups[i]];
    }
    if (total != n_rows) return -4;
    const size_t D = L->d_model;
    for (int i = 0; i < n_groups; i++) {
        const int g = groups[i], off = I32(ws->offsets)[g], n = I32(ws->offsets)[g + 1] - off;
        for (int j = 0; j < n; j++, rows += D) memcpy(F(ws->rows) + (size_t)I32(ws->pairs)[off + j] * D, rows, D * 4);
        ws->n_done += !((uint8_t *)ws->done.p)[g];
        ((uint8_t *)ws->done.p)[g] = 1;
    }
    return 0;
}

int moe_import_rows(const moe_layer *L, moe_workspace *ws, int T, const int32_t *groups, int n_groups,
                    const float *rows, int n_rows) {
    pthread_mutex_lock(&ws->lock);
    const int rc = ws->layer != L || ws->n_tokens != T || n_groups < 0 || n_rows < 0 ? -5
                 : import_locked(L, ws, groups, n_groups, rows, n_rows);
    pthread_mutex_unlock(&ws->lock);
    return rc;
}
