/* Native attention step for decode: for every token of every short segment, in one call per layer,
 *   xn = rms_norm(x); q, k, v = xn Wq^T + bq, ...; Q/K norm; RoPE at the token's position; k, v -> the sequence's
 *   head-major cache; causal GQA attention over the cache; out = x + att Wo^T.
 *
 * Rules, and why:
 * - One call per layer for the whole batch (per-segment cache pointers and lengths in an array): it takes 0.8-1.6 ms
 *   per layer and token of PyTorch small ops and Python off an 8-layer Mixtral-shaped Q4_0 model's decode.
 * - Scratch lives in one process-wide workspace, grown to the largest step seen and then reused, under a lock held
 *   for the whole step (so two Python threads never share it; the thread pool serialises callers anyway).
 * - Q, K and V rows run in one pool pass (xn quantized once per activation format); attention runs as one task
 *   per (token, KV head) with its G query heads together, so each cached key and value row is loaded once for G;
 *   its inner loops (attention_core.h) are compiled per tier, with the dot and the accumulation inlined: a
 *   function-pointer dot per key and head ran 1.6x slower at 1000 keys. At 4000 keys one thread reads the 32 MB of
 *   float32 keys and values of a Mixtral-shaped layer in ~5 ms, faster than torch sums 32 MB on the same machine.
 * - Softmax in float32 with max subtraction, online over blocks of KEY_BLOCK keys (exactly two-pass below that),
 *   so scratch does not grow with the context; results match the PyTorch path to ~1e-6 relative.
 * - Everything a loop indexes by is checked first (attn_layer_check once per layer, check_segments per call). */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "attention.h"
#include "kernels.h"
#include "matmul.h"
#include "threadpool.h"

#define KEY_BLOCK 128
#define MIN_PARALLEL_MACS (1 << 16) /* below this the pool's wake-up costs more than the attention itself */
#define MAX_CACHE_ROWS (1 << 26)    /* capacity bound, so capacity * head_dim cannot overflow an index */

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }
static int imin(int a, int b) { return a < b ? a : b; }

/* ---- checks ----------------------------------------------------------------------------------------------- */

static int check_proj(const attn_proj *p, int rows, int cols) {
    const qtype_kernels *k = kernels_for(p->type);
    if (!k) return -1;
    return p->w && p->rows == rows && p->cols == cols && cols % k->block == 0 && rows % k->row_group == 0 ? 0 : -4;
}

int attn_layer_check(const attn_layer *L) {
    if (L->d_model <= 0 || L->n_heads <= 0 || L->n_kv_heads <= 0 || L->head_dim <= 0) return -4;
    if (L->n_heads % L->n_kv_heads || L->rope_dim < 0 || L->rope_dim % 2 || L->rope_dim > L->head_dim) return -4;
    if ((size_t)L->n_heads * L->head_dim > (1u << 30)) return -4;
    if (!L->norm || (L->rope_dim && !L->inv_freq) || L->qk_norm < QK_NORM_NONE || L->qk_norm > QK_NORM_FULL) return -4;
    if (L->qk_norm != QK_NORM_NONE && (!L->q_norm || !L->k_norm)) return -4;
    const int nq = L->n_heads * L->head_dim, nkv = L->n_kv_heads * L->head_dim;
    int rc;
    if ((rc = check_proj(&L->q, nq, L->d_model)) || (rc = check_proj(&L->k, nkv, L->d_model))) return rc;
    if ((rc = check_proj(&L->v, nkv, L->d_model)) || (rc = check_proj(&L->o, L->d_model, nq))) return rc;
    return 0;
}

static int check_segment(const attn_segment *s, int row) {
    if (s->start != row || s->length < 1 || s->length > ATTN_MAX_SEGMENT_TOKENS) return -4;
    if (!s->k || !s->v || s->k == s->v || !s->positions || s->capacity > MAX_CACHE_ROWS) return -4;
    if (s->n_cached < 0 || s->capacity < 1 || s->length > s->capacity - s->n_cached) return -4;
    for (int i = 0; i < s->length; i++)
        if (s->positions[i] < 0) return -4;
    return 0;
}

static int check_segments(const attn_segment *segs, int n_segs, int n_tokens) {
    /* in order, covering rows 0..n_tokens-1; no cache in two segments (their rows would overlap) */
    int row = 0;
    for (int i = 0; i < n_segs; i++) {
        if (check_segment(&segs[i], row)) return -4;
        for (int e = 0; e < i; e++)
            if (segs[e].k == segs[i].k || segs[e].v == segs[i].v || segs[e].k == segs[i].v || segs[e].v == segs[i].k)
                return -4;
        row += segs[i].length;
    }
    return n_segs > 0 && row == n_tokens ? 0 : -4;
}

/* ---- workspace -------------------------------------------------------------------------------------------- */

typedef struct { size_t xn, act[3], q, k, v, rope, att, act_o, y, task, seg_of, total; } layout;

typedef struct {
    float *xn, *q, *k, *v, *rope, *att, *y, *task; /* rope: [T, rope_dim] cos then sin; task: per attention task */
    uint8_t *act[3], *act_o;                       /* xn per activation kind (F32: xn itself); att for o */
    int *seg_of;                                   /* [T] segment of each row */
} scratch;

static struct { pthread_mutex_t lock; uint8_t *buf; size_t cap; } WS = { PTHREAD_MUTEX_INITIALIZER, NULL, 0 };

static size_t take(size_t *off, size_t bytes) {
    const size_t at = *off;
    *off += align64(bytes + 64);  /* 64 bytes of slack after every buffer, as quantize_acts leaves */
    return at;
}

static size_t task_floats(const attn_layer *L) {
    const int g = L->n_heads / L->n_kv_heads;
    return (size_t)g * (KEY_BLOCK + L->head_dim + 2);  /* scores [G, KEY_BLOCK], acc [G, Dh], max [G], sum [G] */
}

static layout plan(const attn_layer *L, int T) {
    const size_t f = sizeof(float), nq = (size_t)L->n_heads * L->head_dim, nkv = (size_t)L->n_kv_heads * L->head_dim;
    const attn_proj *in[3] = { &L->q, &L->k, &L->v };
    layout p = { 0 };
    size_t off = 0;
    p.xn = take(&off, f * T * L->d_model);
    for (int a = 0; a < 3; a++) p.act[a] = 0;
    for (int m = 0; m < 3; m++) {
        const enum act_kind a = kernels_for(in[m]->type)->act;
        if (a != ACT_F32 && !p.act[a]) p.act[a] = take(&off, act_row_bytes(a, L->d_model) * T);
    }
    p.q = take(&off, f * T * nq);
    p.k = take(&off, f * T * nkv);
    p.v = take(&off, f * T * nkv);
    p.rope = take(&off, f * T * (L->rope_dim ? L->rope_dim : 1));
    p.att = take(&off, f * T * nq);
    p.act_o = take(&off, act_row_bytes(kernels_for(L->o.type)->act, (int)nq) * T);
    p.y = take(&off, f * T * L->d_model);
    p.task = take(&off, f * task_floats(L) * T * L->n_kv_heads);
    p.seg_of = take(&off, sizeof(int) * T);
    p.total = off;
    return p;
}

static int workspace(const attn_layer *L, int T, scratch *s) {
    /* caller holds WS.lock; grows the buffer only past the largest step so far */
    const layout p = plan(L, T);
    if (p.total > WS.cap) {
        free(WS.buf);
        WS.buf = aligned_alloc(64, align64(p.total));
        WS.cap = WS.buf ? align64(p.total) : 0;
        if (!WS.buf) return -2;
    }
    uint8_t *b = WS.buf;
    *s = (scratch){ (float *)(b + p.xn), (float *)(b + p.q), (float *)(b + p.k), (float *)(b + p.v),
                    (float *)(b + p.rope), (float *)(b + p.att), (float *)(b + p.y), (float *)(b + p.task),
                    { NULL, b + p.act[1], b + p.act[2] }, b + p.act_o, (int *)(b + p.seg_of) };
    return 0;
}

/* ---- row operations --------------------------------------------------------------------------------------- */

static void rms_norm(const float *x, const float *w, float eps, int n, float *y) {
    /* y = w * (x / sqrt(mean(x^2) + eps)), in PyTorch's order; y may be x */
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += (double)x[i] * x[i]; s1 += (double)x[i + 1] * x[i + 1];
        s2 += (double)x[i + 2] * x[i + 2]; s3 += (double)x[i + 3] * x[i + 3];
    }
    for (; i < n; i++) s0 += (double)x[i] * x[i];
    const float r = 1.0f / sqrtf((float)((s0 + s1 + s2 + s3) / n) + eps);
    for (i = 0; i < n; i++) y[i] = w[i] * (x[i] * r);
}

static void rope_table(const attn_layer *L, int64_t pos, float *cs) {
    /* cs: [rope_dim/2] cos, then [rope_dim/2] sin of (float)pos * inv_freq, as layers/rope.py */
    const int half = L->rope_dim / 2;
    for (int i = 0; i < half; i++) {
        const float a = (float)pos * L->inv_freq[i];
        cs[i] = cosf(a);
        cs[half + i] = sinf(a);
    }
}

static void rope_head(const attn_layer *L, const float *cs, float *x) {
    /* x: [head_dim], the first rope_dim features rotate: adjacent pairs ("norm") or halves ("neox") */
    const int half = L->rope_dim / 2, step = L->rope_neox ? 1 : 2, other = L->rope_neox ? half : 1;
    for (int i = 0; i < half; i++) {
        float *a = x + i * step, *b = a + other;
        const float x1 = *a, x2 = *b, c = cs[i], s = cs[half + i];
        *a = x1 * c - x2 * s;
        *b = x2 * c + x1 * s;
    }
}

static void add_bias(float *y, const float *b, int n) {
    if (b)
        for (int i = 0; i < n; i++) y[i] += b[i];
}

static void norm_heads(const float *w, float eps, int n_heads, int dh, float *x) {
    for (int h = 0; h < n_heads; h++) rms_norm(x + (size_t)h * dh, w, eps, dh, x + (size_t)h * dh);
}

/* ---- Q/K/V projections: one pool pass over the rows of all three ------------------------------------------ */

typedef struct {
    const qtype_kernels *k; const uint8_t *w; size_t w_row_bytes;
    const uint8_t *act; size_t act_row_bytes;
    float *y; int n_rows, n_cols, tasks, rows_per_task;
} rows_job;

typedef struct { rows_job m[3]; int n_tokens; } qkv_job;

static rows_job rows_of(const attn_proj *p, const uint8_t *act, float *y, int n_threads) {
    const qtype_kernels *k = kernels_for(p->type);
    const int per = rows_per_task(p->rows, n_threads);
    return (rows_job){ k, p->w, (size_t)(p->cols / k->block) * k->type_size, act, act_row_bytes(k->act, p->cols),
                       y, p->rows, p->cols, (p->rows + per - 1) / per, per };
}

static void qkv_task(void *ctx, int task) {
    const qkv_job *j = ctx;
    int m = 0;
    while (task >= j->m[m].tasks) task -= j->m[m++].tasks;
    const rows_job *r = &j->m[m];
    const int r0 = task * r->rows_per_task, r1 = imin(r0 + r->rows_per_task, r->n_rows);
    rows_dot(r->k, r->w, r->w_row_bytes, r0, r1, r->n_cols, r->act, r->act_row_bytes, j->n_tokens, r->y, r->n_rows);
}

typedef struct { enum act_kind act; const float *x; uint8_t *out; size_t row_bytes; int n; } quant_job;

static void quant_task(void *ctx, int t) {
    const quant_job *q = ctx;
    quantize_act_row(q->act, q->x + (size_t)t * q->n, q->out + (size_t)t * q->row_bytes, q->n);
}

static const uint8_t *quantized(enum act_kind act, const float *x, uint8_t *buf, int T, int n, int n_threads) {
    /* x: [T, n] -> rows in format `act` (F32: x itself, no copy) */
    if (act == ACT_F32) return (const uint8_t *)x;
    quant_job q = { act, x, buf, act_row_bytes(act, n), n };
    pool_run(quant_task, &q, T, T >= 8 ? n_threads : 1);
    return buf;
}

static void project_qkv(const attn_layer *L, const scratch *s, int T, int n_threads) {
    const attn_proj *in[3] = { &L->q, &L->k, &L->v };
    float *out[3] = { s->q, s->k, s->v };
    const uint8_t *act[3] = { NULL, NULL, NULL };  /* per activation kind, quantized once */
    qkv_job j = { .n_tokens = T };
    for (int m = 0; m < 3; m++) {
        const enum act_kind a = kernels_for(in[m]->type)->act;
        if (!act[a]) act[a] = quantized(a, s->xn, s->act[a], T, L->d_model, n_threads);
        j.m[m] = rows_of(in[m], act[a], out[m], n_threads);
    }
    pool_run(qkv_task, &j, j.m[0].tasks + j.m[1].tasks + j.m[2].tasks, n_threads);
}

/* ---- bias, Q/K norm, RoPE, KV append (one thread: O(T * (H + 2 KVH) * Dh), small beside the projections) --- */

static void prepare_token(const attn_layer *L, const scratch *s, const attn_segment *seg, int t) {
    const int dh = L->head_dim, nq = L->n_heads * dh, nkv = L->n_kv_heads * dh, i = t - seg->start;
    float *q = s->q + (size_t)t * nq, *k = s->k + (size_t)t * nkv, *v = s->v + (size_t)t * nkv;
    add_bias(q, L->q.bias, nq); add_bias(k, L->k.bias, nkv); add_bias(v, L->v.bias, nkv);
    if (L->qk_norm == QK_NORM_FULL) {
        rms_norm(q, L->q_norm, L->q_eps, nq, q);
        rms_norm(k, L->k_norm, L->k_eps, nkv, k);
    } else if (L->qk_norm == QK_NORM_HEAD) {
        norm_heads(L->q_norm, L->q_eps, L->n_heads, dh, q);
        norm_heads(L->k_norm, L->k_eps, L->n_kv_heads, dh, k);
    }
    if (L->rope_dim) {
        float *cs = s->rope + (size_t)t * L->rope_dim;
        rope_table(L, seg->positions[i], cs);
        for (int h = 0; h < L->n_heads; h++) rope_head(L, cs, q + (size_t)h * dh);
        for (int h = 0; h < L->n_kv_heads; h++) rope_head(L, cs, k + (size_t)h * dh);
    }
    const size_t row = (size_t)(seg->n_cached + i) * dh;
    for (int h = 0; h < L->n_kv_heads; h++) {
        const size_t at = (size_t)h * seg->capacity * dh + row;
        memcpy(seg->k + at, k + (size_t)h * dh, sizeof(float) * dh);
        memcpy(seg->v + at, v + (size_t)h * dh, sizeof(float) * dh);
    }
}

/* ---- attention: one task per (token, KV head), its G query heads together --------------------------------- */

typedef struct {
    const float *q;       /* [G, Dh] the query heads of this KV head, roped */
    float *sc, *acc;      /* [G, KEY_BLOCK] scores, then weights; [G, Dh] weighted sums of values */
    float *m, *l;         /* [G] running max and sum of exp(score - max) */
    float scale;
    int g, dh;
} head_block;

typedef void (*keys_fn)(const head_block *hb, const float *K, const float *V, int n_keys);

static inline float dot_generic(const float *a, const float *b, int n) {
    float s[4] = { 0 };  /* four partial sums: SSE-wide on the baseline target */
    int i = 0;
    for (; i + 4 <= n; i += 4)
        for (int k = 0; k < 4; k++) s[k] += a[i + k] * b[i + k];
    float sum = (s[0] + s[2]) + (s[1] + s[3]);
    for (; i < n; i++) sum += a[i] * b[i];
    return sum;
}

static inline void axpy_generic(float a, const float *x, float *y, int n) {
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

#define TIER(name) name##_generic
#define TARGET
#include "attention_core.h"
#undef TIER
#undef TARGET

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TARGET __attribute__((target("avx2,fma")))

TARGET static inline float dot_avx2(const float *a, const float *b, int n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    const __m256 s8 = _mm256_add_ps(s0, s1);
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    float sum = _mm_cvtss_f32(_mm_add_ss(s4, _mm_movehdup_ps(s4)));
    for (; i < n; i++) sum += a[i] * b[i];
    return sum;
}

TARGET static inline void axpy_avx2(float a, const float *x, float *y, int n) {
    const __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

#define TIER(name) name##_avx2
#include "attention_core.h"
#undef TIER
#undef TARGET
#endif

typedef struct {
    const attn_layer *L; const attn_segment *segs; const scratch *s;
    keys_fn keys; float scale;
} attend_job;

static void attend_task(void *ctx, int task) {
    const attend_job *j = ctx;
    const attn_layer *L = j->L;
    const int t = task / L->n_kv_heads, h = task % L->n_kv_heads, dh = L->head_dim, g = L->n_heads / L->n_kv_heads;
    const attn_segment *seg = &j->segs[j->s->seg_of[t]];
    const int64_t p = seg->positions[t - seg->start];
    const int stored = seg->n_cached + seg->length, n_keys = p + 1 < stored ? (int)(p + 1) : stored;
    const size_t head = (size_t)h * seg->capacity * dh, at = (size_t)t * L->n_heads * dh + (size_t)h * g * dh;
    float *sc = j->s->task + (size_t)task * task_floats(L), *acc = sc + (size_t)g * KEY_BLOCK;
    float *m = acc + (size_t)g * dh;
    head_block hb = { j->s->q + at, sc, acc, m, m + g, j->scale, g, dh };
    for (int i = 0; i < g; i++) hb.m[i] = -INFINITY, hb.l[i] = 0.0f;
    memset(acc, 0, sizeof(float) * g * dh);
    j->keys(&hb, seg->k + head, seg->v + head, n_keys);
    float *out = j->s->att + at;
    for (int i = 0; i < g; i++)
        for (int d = 0; d < dh; d++) out[(size_t)i * dh + d] = acc[(size_t)i * dh + d] / hb.l[i];
}

static keys_fn keys_for_tier(void) {
    /* the F32 dot's tier: the CPU's best, capped by MOESTREAM_KERNEL_TIER as every kernel is */
#if defined(__x86_64__) || defined(__i386__)
    if (strcmp(kernels_for(GT_F32)->tier, "generic") != 0) return attend_keys_avx2;
#endif
    return attend_keys_generic;
}

static void attend(const attn_layer *L, const scratch *s, const attn_segment *segs, int n_segs, int T,
                   int n_threads) {
    attend_job j = { L, segs, s, keys_for_tier(), (float)(1.0 / sqrt((double)L->head_dim)) };
    double macs = 0;
    for (int i = 0; i < n_segs; i++) macs += (double)segs[i].length * (segs[i].n_cached + segs[i].length);
    macs *= 2.0 * L->n_heads * L->head_dim;
    pool_run(attend_task, &j, T * L->n_kv_heads, macs >= MIN_PARALLEL_MACS ? n_threads : 1);
}

/* ---- the step --------------------------------------------------------------------------------------------- */

static void output(const attn_layer *L, const scratch *s, const float *x, float *out, int T, int n_threads) {
    const int nq = L->n_heads * L->head_dim;
    const qtype_kernels *k = kernels_for(L->o.type);
    const uint8_t *act = quantized(k->act, s->att, s->act_o, T, nq, n_threads);
    matmul_prequantized(k, L->o.w, L->d_model, nq, act, T, s->y, L->d_model, n_threads);
    for (size_t i = 0, n = (size_t)T * L->d_model; i < n; i++) out[i] = x[i] + s->y[i];
}

static void run_step(const attn_layer *L, const scratch *s, const float *x, int T, const attn_segment *segs,
                     int n_segs, float *out, int n_threads) {
    for (int i = 0; i < n_segs; i++)
        for (int r = 0; r < segs[i].length; r++) s->seg_of[segs[i].start + r] = i;
    for (int t = 0; t < T; t++)
        rms_norm(x + (size_t)t * L->d_model, L->norm, L->eps, L->d_model, s->xn + (size_t)t * L->d_model);
    project_qkv(L, s, T, n_threads);
    for (int t = 0; t < T; t++) prepare_token(L, s, &segs[s->seg_of[t]], t);
    attend(L, s, segs, n_segs, T, n_threads);
    output(L, s, x, out, T, n_threads);
}

int attn_step(const attn_layer *L, const float *x, int n_tokens, const attn_segment *segs, int n_segs, float *out,
              int n_threads) {
    if (n_tokens <= 0 || check_segments(segs, n_segs, n_tokens)) return -4;
    pthread_mutex_lock(&WS.lock);
    scratch s;
    const int rc = workspace(L, n_tokens, &s);
    if (rc == 0) run_step(L, &s, x, n_tokens, segs, n_segs, out, n_threads);
    pthread_mutex_unlock(&WS.lock);
    return rc;
}
