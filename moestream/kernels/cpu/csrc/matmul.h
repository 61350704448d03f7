#ifndef MOESTREAM_MATMUL_H
#define MOESTREAM_MATMUL_H
#include "kernels.h"

/* 0 on success, -1 unsupported type, -2 out of memory, -4 invalid sizes (see matmul.c) */
int matmul(int type, const void *w, int n_rows, int n_cols, const float *x, int n_tokens, float *y, int n_threads);
uint8_t *quantize_acts(enum act_kind act, const float *x, int n_tokens, int n_cols, int n_threads); /* malloc'd */
void quantize_acts_into(enum act_kind act, const float *x, int n_tokens, int n_cols, uint8_t *out, int n_threads);
void matmul_prequantized(const qtype_kernels *k, const void *w, int n_rows, int n_cols, const uint8_t *act,
                         int n_tokens, float *y, int y_stride, int n_threads);
void rows_dot(const qtype_kernels *k, const uint8_t *w, size_t w_row_bytes, int r0, int r1, int n_cols,
              const uint8_t *act, size_t act_row_bytes, int n_tokens, float *y, int y_stride);
#endif
