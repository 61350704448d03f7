/* Packed ("_R8") layouts: a GGUF type's blocks re-laid 8 rows at a time, so that one kernel pass computes 8 rows
 * with every activation load and every scale conversion shared, and the 8 partial sums land in the 8 lanes of one
 * vector (no horizontal sum per row). Same bytes, same size, only moved:
 *
 *   rows 8g..8g+7 keep their byte range [8g * row_bytes, 8(g+1) * row_bytes); inside it block column b is
 *   Q4_0_R8: half d[8] (row r's scale), then 4 chunks of 32 bytes: chunk c byte 4r+j = row r's qs[4c + j]
 *            (low nibble: element 4c+j, high nibble: element 4c+j+16)                       (144 = 8 x 18 bytes)
 *   Q8_0_R8: half d[8], then 8 chunks of 32 bytes: chunk c byte 4r+j = row r's qs[4c + j]      (272 = 8 x 34 bytes)
 *
 * formats/packed.py holds the same layout in PyTorch (the reference, which undoes it before dequantizing). */
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "packed.h"
#include "threadpool.h"

typedef struct { int type_size, qs_bytes, qs_offset; } block_shape;

static int shape_of(int type, block_shape *s) {
    if (type == GT_Q4_0) *s = (block_shape){ sizeof(block_q4_0), 16, 2 };
    else if (type == GT_Q8_0) *s = (block_shape){ sizeof(block_q8_0), 32, 2 };
    else return -1;
    return 0;
}

static void pack_group(const block_shape *s, const uint8_t *src, uint8_t *dst, size_t row_bytes, int nb) {
    /* src: 8 rows of nb blocks -> dst: nb packed block columns (src and dst do not overlap here) */
    const int chunks = s->qs_bytes / 4, packed = 8 * s->type_size;
    for (int b = 0; b < nb; b++) {
        uint8_t *o = dst + (size_t)b * packed;
        for (int r = 0; r < 8; r++) {
            const uint8_t *blk = src + (size_t)r * row_bytes + (size_t)b * s->type_size;
            memcpy(o + 2 * r, blk, 2);
            for (int c = 0; c < chunks; c++) memcpy(o + 16 + 32 * c + 4 * r, blk + s->qs_offset + 4 * c, 4);
        }
    }
}

typedef struct { block_shape s; const uint8_t *src; uint8_t *dst; size_t row_bytes; int nb, groups, per_task;
                 int failed; } pack_job;

static void pack_task(void *ctx, int task) {
    pack_job *j = ctx;
    const size_t group_bytes = 8 * j->row_bytes;
    uint8_t *tmp = j->src == j->dst ? malloc(group_bytes) : NULL;
    if (j->src == j->dst && !tmp) {
        __atomic_store_n(&j->failed, 1, __ATOMIC_RELAXED);  /* several tasks may fail at once */
        return;
    }
    for (int g = task * j->per_task; g < j->groups && g < (task + 1) * j->per_task; g++) {
        const uint8_t *from = j->src + g * group_bytes;
        if (tmp) from = memcpy(tmp, from, group_bytes);
        pack_group(&j->s, from, j->dst + g * group_bytes, j->row_bytes, j->nb);
    }
    free(tmp);
}

int pack_rows8(int type, const void *src, void *dst, int rows, int cols, int n_threads) {
    pack_job j = { .src = src, .dst = dst };
    if (shape_of(type, &j.s)) return -1;
    if (!src || !dst || rows <= 0 || cols <= 0 || rows % 8 || cols % 32) return -4;
    const size_t bytes = (size_t)rows * (cols / 32) * j.s.type_size;
    const uint8_t *s = src, *d = dst;
    if (s != d && s < d + bytes && d < s + bytes) return -4;  /* partly overlapping: neither copy nor in place */
    j.nb = cols / 32, j.row_bytes = (size_t)j.nb * j.s.type_size, j.groups = rows / 8;
    const int tasks = j.groups < 8 * n_threads ? j.groups : 8 * n_threads;
    j.per_task = (j.groups + tasks - 1) / tasks;
    pool_run(pack_task, &j, (j.groups + j.per_task - 1) / j.per_task, n_threads);
    return __atomic_load_n(&j.failed, __ATOMIC_RELAXED) ? -2 : 0;
}

/* ---- generic kernels (any CPU; the AVX2 tier replaces them) ------------------------------------------------ */

static void gemv8_q4_0(int n, const void *w, const void *act, size_t act_row_bytes, int n_tokens, float *y,
                       int y_stride) {
    /* dot_generic.c's dot_q4_0 per row, in its order: bit-identical to it */
    const block_q4_0_r8 *x = w;
    for (int t = 0; t < n_tokens; t++) {
        const act_a32 *a = (const act_a32 *)((const uint8_t *)act + (size_t)t * act_row_bytes);
        float sum[8] = { 0 };
        for (int b = 0; b < n / 32; b++)
            for (int r = 0; r < 8; r++) {
                int acc = 0;
                for (int c = 0; c < 4; c++)
                    for (int k = 0; k < 4; k++) {
                        const uint8_t q = x[b].qs[32 * c + 4 * r + k];
                        acc += ((q & 15) - 8) * a[b].qs[4 * c + k] + ((q >> 4) - 8) * a[b].qs[4 * c + k + 16];
                    }
                sum[r] += half_to_float(x[b].d[r]) * a[b].d * (float)acc;
            }
        for (int r = 0; r < 8; r++) y[(size_t)t * y_stride + r] = sum[r];
    }
}

static void gemv8_q8_0(int n, const void *w, const void *act, size_t act_row_bytes, int n_tokens, float *y,
                       int y_stride) {
    /* dot_generic.c's dot_q8_0 per row, in its order */
    const block_q8_0_r8 *x = w;
    for (int t = 0; t < n_tokens; t++) {
        const act_a32 *a = (const act_a32 *)((const uint8_t *)act + (size_t)t * act_row_bytes);
        float sum[8] = { 0 };
        for (int b = 0; b < n / 32; b++)
            for (int r = 0; r < 8; r++) {
                int acc = 0;
                for (int c = 0; c < 8; c++)
                    for (int k = 0; k < 4; k++) acc += x[b].qs[32 * c + 4 * r + k] * a[b].qs[4 * c + k];
                sum[r] += half_to_float(x[b].d[r]) * a[b].d * (float)acc;
            }
        for (int r = 0; r < 8; r++) y[(size_t)t * y_stride + r] = sum[r];
    }
}

void register_packed_generic(qtype_kernels *t) {
    t[GT_Q4_0_R8] = (qtype_kernels){ 32, sizeof(block_q4_0), ACT_A32, NULL, "generic", gemv8_q4_0, 8, NULL };
    t[GT_Q8_0_R8] = (qtype_kernels){ 32, sizeof(block_q8_0), ACT_A32, NULL, "generic", gemv8_q8_0, 8, NULL };
}
