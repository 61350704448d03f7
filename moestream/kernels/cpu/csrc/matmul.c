/* y[T, N] = x[T, K] . W[N, K]^T with W in a GGUF type: quantize x once into the partner format, then split
 * the N weight rows over the thread pool in chunks; each chunk reads its rows once for all T tokens. */
#include <stdlib.h>

#include "kernels.h"
#include "matmul.h"
#include "threadpool.h"

typedef struct {
    const qtype_kernels *k;
    const uint8_t *w; size_t w_row_bytes;
    const uint8_t *act; size_t act_row_bytes;
    float *y; int n_rows, n_cols, n_tokens;
    int y_stride, rows_per_task;
} matmul_job;

void rows_dot(const qtype_kernels *k, const uint8_t *w, size_t w_row_bytes, int r0, int r1, int n_cols,
              const uint8_t *act, size_t act_row_bytes, int n_tokens, float *y, int y_stride) {
    /* y[t, r] for rows [r0, r1) and every token; each weight row is read once, from L1 for t > 0. A packed
     * type takes 8 rows at a time (r0 and r1 are multiples of 8 there: every caller splits rows in multiples of 16 (rows_per_task)
     * and checks the row count against row_group) */
    if (k->gemv8) {
        for (int g = r0; g < r1; g += 8)
            k->gemv8(n_cols, w + (size_t)g * w_row_bytes, act, act_row_bytes, n_tokens, y + g, y_stride);
        return;
    }
    int r = r0;
    if (k->dot8) {
        float y8[8];
        for (; r + 8 <= r1; r += 8)
            for (int t = 0; t < n_tokens; t++) {
                k->dot8(n_cols, w + (size_t)r * w_row_bytes, w_row_bytes, act + (size_t)t * act_row_bytes, y8);
                for (int i = 0; i < 8; i++) y[(size_t)t * y_stride + r + i] = y8[i];
            }
    }
    for (; r < r1; r++)
        for (int t = 0; t < n_tokens; t++)
            y[(size_t)t * y_stride + r] = k->dot(n_cols, w + (size_t)r * w_row_bytes, act + (size_t)t * act_row_bytes);
}

static void matmul_task(void *ctx, int task) {
    const matmul_job *j = ctx;
    const int r0 = task * j->rows_per_task;
    const int r1 = r0 + j->rows_per_task < j->n_rows ? r0 + j->rows_per_task : j->n_rows;
    rows_dot(j->k, j->w, j->w_row_bytes, r0, r1, j->n_cols, j->act, j->act_row_bytes, j->n_tokens, j->y, j->y_stride);
}

typedef struct { enum act_kind act; const float *x; uint8_t *out; size_t out_bytes; int n_cols; } quant_job;

static void quant_task(void *ctx, int t) {
    const quant_job *q = ctx;
    quantize_act_row(q->act, q->x + (size_t)t * q->n_cols, q->out + (size_t)t * q->out_bytes, q->n_cols);
}

void quantize_acts_into(enum act_kind act, const float *x, int n_tokens, int n_cols, uint8_t *out, int n_threads) {
    quant_job q = { act, x, out, act_row_bytes(act, n_cols), n_cols };
    pool_run(quant_task, &q, n_tokens, n_tokens >= 8 ? n_threads : 1);
}

uint8_t *quantize_acts(enum act_kind act, const float *x, int n_tokens, int n_cols, int n_threads) {
    uint8_t *buf = malloc(act_row_bytes(act, n_cols) * (size_t)n_tokens + 64);
    if (buf) quantize_acts_into(act, x, n_tokens, n_cols, buf, n_threads);
    return buf;
}

void matmul_prequantized(const qtype_kernels *k, const void *w, int n_rows, int n_cols, const uint8_t *act,
                         int n_tokens, float *y, int y_stride, int n_threads) {
    matmul_job j = { k, w, (size_t)(n_cols / k->block) * k->type_size, act, act_row_bytes(k->act, n_cols),
                     y, n_rows, n_cols, n_tokens, y_stride, rows_per_task(n_rows, n_threads) };
    pool_run(matmul_task, &j, (n_rows + j.rows_per_task - 1) / j.rows_per_task, n_threads);
}

int matmul(int type, const void *w, int n_rows, int n_cols, const float *x, int n_tokens, float *y, int n_threads) {
    /* the Python wrapper checks buffers in full; these cheap checks keep any other caller from reading past rows */
    const qtype_kernels *k = kernels_for(type);
    if (!k) return -1;
    if (n_rows <= 0 || n_cols <= 0 || n_cols % k->block || n_rows % k->row_group || n_tokens < 0) return -4;
    uint8_t *act = quantize_acts(k->act, x, n_tokens, n_cols, n_threads);
    if (!act) return -2;
    matmul_prequantized(k, w, n_rows, n_cols, act, n_tokens, y, n_rows, n_threads);
    free(act);
    return 0;
}

/* ---- one product per head: y[t, h] = W_h . x[t, h] ------------------------------------------------------------
 * For MLA's per-head up-projections (layers/mla.py): H matrices of [n_rows, n_cols] back to back in one buffer, each
 * applied to its own head's slice of every token. One call and one pool job for all heads, instead of one per head. */

typedef struct {
    const qtype_kernels *k;
    const uint8_t *w; size_t w_row_bytes, head_bytes;
    const uint8_t *act; size_t act_bytes;
    float *y; int n_heads, n_rows, n_cols, n_tokens, rows_per_task, chunks;
} heads_job;

static void heads_task(void *ctx, int task) {
    const heads_job *j = ctx;
    const int h = task / j->chunks, r0 = (task % j->chunks) * j->rows_per_task;
    const int r1 = r0 + j->rows_per_task < j->n_rows ? r0 + j->rows_per_task : j->n_rows;
    /* token t's row of head h: activation (t * H + h), output y[t, h, :] */
    rows_dot(j->k, j->w + (size_t)h * j->head_bytes, j->w_row_bytes, r0, r1, j->n_cols, j->act + (size_t)h * j->act_bytes,
             j->act_bytes * (size_t)j->n_heads, j->n_tokens, j->y + (size_t)h * j->n_rows, j->n_heads * j->n_rows);
}

int matmul_heads(int type, const void *w, int n_heads, int n_rows, int n_cols, const float *x, int n_tokens, float *y,
                 int n_threads) {
    /* w: [H, n_rows, n_cols] in `type`; x: [T, H, n_cols] float32; y: [T, H, n_rows] */
    const qtype_kernels *k = kernels_for(type);
    if (!k) return -1;
    if (n_heads <= 0 || n_rows <= 0 || n_cols <= 0 || n_cols % k->block || n_rows % k->row_group || n_tokens < 0)
        return -4;
    if (n_tokens == 0) return 0;
    uint8_t *act = quantize_acts(k->act, x, n_tokens * n_heads, n_cols, n_threads);
    if (!act) return -2;
    const size_t w_row_bytes = (size_t)(n_cols / k->block) * k->type_size;
    const int rpt = rows_per_task(n_rows, n_threads), chunks = (n_rows + rpt - 1) / rpt;
    heads_job j = { k, w, w_row_bytes, w_row_bytes * (size_t)n_rows, act, act_row_bytes(k->act, n_cols), y, n_heads,
                    n_rows, n_cols, n_tokens, rpt, chunks };
    pool_run(heads_task, &j, n_heads * chunks, n_threads);
    free(act);
    return 0;
}
