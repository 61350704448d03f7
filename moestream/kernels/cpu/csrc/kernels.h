/* moestream native CPU kernels: GGUF block layouts, activation formats, the per-type kernel table.
 *
 * A weight row of n elements in GGUF type T is multiplied with an activation row that was quantized once
 * per call into T's partner format (as llama.cpp does): A32 for the 32-element legacy types, AK for K-quants,
 * plain F32 for float weights. vec_dot returns the dot product of one weight row with one activation row. */
#ifndef MOESTREAM_KERNELS_H
#define MOESTREAM_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef uint16_t half;

/* GGUF weight blocks (byte layouts fixed by the file format). */
typedef struct { half d; uint8_t qs[16]; } block_q4_0;                 /* x = d * (nibble - 8)          */
typedef struct { half d, m; uint8_t qs[16]; } block_q4_1;              /* x = d * nibble + m            */
typedef struct { half d; uint8_t qh[4]; uint8_t qs[16]; } block_q5_0;  /* x = d * (5-bit - 16)          */
typedef struct { half d, m; uint8_t qh[4]; uint8_t qs[16]; } block_q5_1; /* x = d * 5-bit + m          */
typedef struct { half d; int8_t qs[32]; } block_q8_0;                  /* x = d * q                     */
typedef struct { uint8_t e; uint8_t qs[16]; } block_mxfp4;               /* x = 2^(e-127) * fp4(nibble)   */
/* MXFP4: E2M1 values of the 16 codes, doubled to integers; e8m0_half(e) = 2^(e-127) / 2 (ggml's E8M0 "half" rule:
 * e < 2 gives the subnormals 2^-128, 2^-127), so a block is e8m0_half(e) * sum(MXFP4_VALUES[code] * a) */
static const int8_t MXFP4_VALUES[16] = { 0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12 };
static inline float e8m0_half(uint8_t e) {
    const uint32_t bits = e < 2 ? 0x00200000u << e : (uint32_t)(e - 1) << 23;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* Activation formats (ours, in RAM only). */
typedef struct { float d; float s; int8_t qs[32]; } act_a32;            /* s = d * sum(qs), for mins     */
typedef struct { float d; int8_t qs[256]; int16_t bsums[16]; } act_ak;  /* bsums: sums of 16 qs each    */

enum act_kind { ACT_F32 = 0, ACT_A32 = 1, ACT_AK = 2 };

typedef float (*vec_dot_fn)(int n, const void *w_row, const void *act_row);

/* A row-interleaved ("packed", packed.c) type computes 8 rows at once: w_group holds rows g..g+7 of n elements,
 * act the n_tokens activation rows (act_row_bytes apart); y[t * y_stride + r] gets row g+r's dot with token t. */
/* 8 rows of a plain GGUF layout at once (w_row_bytes apart), one token: y8[r] = row r . act; the same arithmetic
 * per row as `dot`, so results are bit-identical to it (and to the type's packed kernel). */
typedef void (*dot8_fn)(int n, const void *w, size_t w_row_bytes, const void *act, float *y8);
typedef void (*gemv8_fn)(int n, const void *w_group, const void *act, size_t act_row_bytes, int n_tokens, float *y,
                         int y_stride);

/* One entry of the dispatch table, keyed by ggml type id. */
typedef struct {
    int block;              /* elements per weight block */
    int type_size;          /* bytes per weight block */
    enum act_kind act;      /* activation format this type's dot expects */
    vec_dot_fn dot;         /* best tier available on this CPU (NULL for a packed type) */
    const char *tier;       /* "generic", "avx2", "avx512" */
    gemv8_fn gemv8;         /* packed types only: 8 rows at a time */
    int row_group;          /* rows must come in multiples of this (8 for packed types, else 1) */
    dot8_fn dot8;           /* optional: 8 rows of the GGUF layout at a time */
} qtype_kernels;

/* ggml type ids (GGUF) */
enum {
    GT_F32 = 0, GT_F16 = 1, GT_Q4_0 = 2, GT_Q4_1 = 3, GT_Q5_0 = 6, GT_Q5_1 = 7, GT_Q8_0 = 8,
    GT_Q2_K = 10, GT_Q3_K = 11, GT_Q4_K = 12, GT_Q5_K = 13, GT_Q6_K = 14, GT_BF16 = 30, GT_MXFP4 = 39,
    /* ours: a GGUF type's blocks re-laid 8 rows at a time (packed.c); id = GT_PACKED + the GGUF type */
    GT_PACKED = 64, GT_Q4_0_R8 = GT_PACKED + GT_Q4_0, GT_Q8_0_R8 = GT_PACKED + GT_Q8_0, GT_MAX = 128
};

const qtype_kernels *kernels_for(int ggml_type); /* NULL if unsupported */
void kernels_init(void);                          /* fills the table by CPU features; idempotent */

size_t act_row_bytes(enum act_kind act, int n);
void quantize_act_row(enum act_kind act, const float *x, void *out, int n);

/* half/bfloat16 -> float */
float half_to_float(half h);
static inline float bf16_to_float(uint16_t h) { union { uint32_t u; float f; } v = { (uint32_t)h << 16 }; return v.f; }

/* Tiers register their functions here (generic always; avx2/avx512 when compiled and supported). */
void register_generic(qtype_kernels *table);
void register_kquants_generic(qtype_kernels *table);
void register_avx2(qtype_kernels *table);
void register_kquants_avx2(qtype_kernels *table);
void register_packed_generic(qtype_kernels *table);
void register_packed_avx2(qtype_kernels *table);
void register_avx512(qtype_kernels *table); /* AVX-512 VNNI: Q4_0/Q8_0 dot8 and their packed gemv8 */

/* Re-lay rows x cols of GGUF type `type` (Q4_0, Q8_0) as its packed type, src -> dst (the same buffer is fine);
 * 0, -1 unsupported type, -2 out of memory, -4 bad sizes (rows % 8, cols % 32). */
int pack_rows8(int type, const void *src, void *dst, int rows, int cols, int n_threads);

#endif
