#ifndef MOESTREAM_MATMUL_H
#define MOESTREAM_MATMUL_H
#include "kernels.h"

/* 0 on success, -1 unsupported type, -2 out of memory, -4 invalid sizes (see matmul.c) */
int matmul(int type, const void *w, int n_rows, int n_cols, const float *x, int n_tokens, float *y, int n_threads);
/* w [n_heads, n_rows, n_cols], x [n_tokens, n_heads, n_cols] -> y [n_tokens, n_heads, n_rows]; 0 or < 0 as matmul */
int matmul_heads(int type, const void *w, int n_heads, int n_rows, int n_cols, const float *x, int n_tokens, float *y,
                 int n_threads);
uint8_t *quantize_acts(enum act_kind act, const float *x, int n_tokens, int n_cols, int n_threads); /* malloc'd */
void quantize_acts_into(enum act_kind act, const float *x, int n_tokens, int n_cols, uint8_t *out, int n_threads);
void matmul_prequantized(const qtype_kernels *k, const void *w, int n_rows, int n_cols, const uint8_t *act,
                         int n_tokens, float *y, int y_stride, int n_threads);
/* Rows per pool task for an n_rows matrix: about 4 tasks per thread (the pool balances them), between 16 and 256
 * rows, a multiple of 16 (packed types take 8 rows at a time; the row count itself need not be a multiple). Long runs
 * of rows stream better: with 2 threads over 12 packed Q4_0 matrices of 14336 x 4096 (beyond the L3), 16 rows per
 * task read 18.4 GB/s, 64 rows 20.8, 256 rows 22.4 (docs/benchmarks.md). Results do not depend on it. */
static inline int rows_per_task(int n_rows, int n_threads) {
    int r = n_rows / (4 * (n_threads > 0 ? n_threads : 1));
    r = r < 16 ? 16 : r > 256 ? 256 : r;
    return r & ~15;
}

void rows_dot(const qtype_kernels *k, const uint8_t *w, size_t w_row_bytes, int r0, int r1, int n_cols,
              const uint8_t *act, size_t act_row_bytes, int n_tokens, float *y, int y_stride);
#endif
