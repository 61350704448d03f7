/* AVX-512 VNNI tier (AVX512F/BW/VL + VNNI, on 256-bit registers): the Q4_0 and Q8_0 kernels of the expert FFN
 * (8-row dots of the GGUF layout and the packed _R8 layouts). vpdpbusd sums four unsigned x signed byte products
 * straight into an int32 lane, where the AVX2 tier needs maddubs (int16 pairs) then madd (int32): the integer
 * sums are the same exact numbers, and the float arithmetic around them is the AVX2 tier's op for op, so every
 * result is bit-identical to the AVX2 and generic tiers (tests/kernels/test_avx512.py). Compiled per function
 * (target attributes) and registered only when the CPU says it has these features. */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "kernels.h"
#include "packed.h"

#define VNNI __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))
#define SIMD_TARGET VNNI
#include "x86_helpers.h"

VNNI static inline __m256i dpbusd(__m256i acc, __m256i u8, __m256i s8) { return _mm256_dpbusd_epi32(acc, u8, s8); }

VNNI static void dot8_q4_0(int n, const void *w, size_t row_bytes, const void *act, float *y8) {
    /* dot_q4_0 of the AVX2 tier for 8 rows (lane r = row r): acc = fma(d_w d_a, block sum, acc),
     * off = fma(d_w, s_a, off), result acc - 8 off */
    const uint8_t *x = w; const act_a32 *y = act;
    __m256 acc = _mm256_setzero_ps(), off = _mm256_setzero_ps();
    for (int b = 0; b < n / 32; b++) {
        const uint8_t *blk = x + (size_t)b * sizeof(block_q4_0);
        const __m256i qa = _mm256_loadu_si256((const __m256i *)y[b].qs);
        __m256i v[8];
        for (int r = 0; r < 8; r++) v[r] = dpbusd(_mm256_setzero_si256(), nibbles(blk + r * row_bytes + 2), qa);
        const __m256 d = scales8(blk, row_bytes);
        acc = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(y[b].d)), _mm256_cvtepi32_ps(sum_lanes8(v)), acc);
        off = _mm256_fmadd_ps(d, _mm256_set1_ps(y[b].s), off);
    }
    _mm256_storeu_ps(y8, _mm256_fnmadd_ps(_mm256_set1_ps(8.0f), off, acc));
}

VNNI static void dot8_q8_0(int n, const void *w, size_t row_bytes, const void *act, float *y8) {
    /* signed x signed through the sign trick: |w| (<= 128, unsigned) x (a with w's sign) */
    const uint8_t *x = w; const act_a32 *y = act;
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < n / 32; b++) {
        const uint8_t *blk = x + (size_t)b * sizeof(block_q8_0);
        const __m256i qa = _mm256_loadu_si256((const __m256i *)y[b].qs);
        __m256i v[8];
        for (int r = 0; r < 8; r++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)(blk + r * row_bytes + 2));
            v[r] = dpbusd(_mm256_setzero_si256(), _mm256_sign_epi8(q, q), _mm256_sign_epi8(qa, q));
        }
        acc = _mm256_fmadd_ps(_mm256_mul_ps(scales8(blk, row_bytes), _mm256_set1_ps(y[b].d)),
                              _mm256_cvtepi32_ps(sum_lanes8(v)), acc);
    }
    _mm256_storeu_ps(y8, acc);
}

/* Packed layouts: each 32-byte chunk holds 4 elements of each of 8 rows, so vpdpbusd against one broadcast 4-byte
 * piece of the activation adds row r's 4 products into 32-bit lane r. */

VNNI static inline __m256 q4_0_r8_sum(const __m256i lo[4], const __m256i hi[4], const act_a32 *a) {
    /* one token and block column: per row, sum_j nib_j a_j exactly, as a float */
    __m256i s = _mm256_setzero_si256();
    for (int c = 0; c < 4; c++) {
        s = dpbusd(s, lo[c], piece(a->qs, c));
        s = dpbusd(s, hi[c], piece(a->qs, c + 4));
    }
    return _mm256_cvtepi32_ps(s);
}

VNNI static inline void q4_0_r8_scale(__m256 d, const act_a32 *a, __m256 isum, __m256 *acc, __m256 *off) {
    *acc = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(a->d)), isum, *acc);
    *off = _mm256_fmadd_ps(d, _mm256_set1_ps(a->s), *off);
}

VNNI static void gemv8_q4_0(int n, const void *w, const void *act, size_t act_row_bytes, int n_tokens, float *y,
                            int y_stride) {
    /* tokens two at a time (prefill) with each block's nibbles unpacked once; per token the one-token arithmetic */
    const block_q4_0_r8 *x = w;
    const __m256 eight = _mm256_set1_ps(8.0f);
    __m256i lo[4], hi[4];
    int t = 0;
    for (; t + 2 <= n_tokens; t += 2) {
        const act_a32 *a0 = token(act, act_row_bytes, t), *a1 = token(act, act_row_bytes, t + 1);
        __m256 acc0 = _mm256_setzero_ps(), off0 = _mm256_setzero_ps();
        __m256 acc1 = _mm256_setzero_ps(), off1 = _mm256_setzero_ps();
        for (int b = 0; b < n / 32; b++) {
            q4_0_r8_unpack(x + b, lo, hi);
            const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)x[b].d));
            q4_0_r8_scale(d, a0 + b, q4_0_r8_sum(lo, hi, a0 + b), &acc0, &off0);
            q4_0_r8_scale(d, a1 + b, q4_0_r8_sum(lo, hi, a1 + b), &acc1, &off1);
        }
        _mm256_storeu_ps(y + (size_t)t * y_stride, _mm256_fnmadd_ps(eight, off0, acc0));
        _mm256_storeu_ps(y + (size_t)(t + 1) * y_stride, _mm256_fnmadd_ps(eight, off1, acc1));
    }
    for (; t < n_tokens; t++) {
        const act_a32 *a = token(act, act_row_bytes, t);
        __m256 acc = _mm256_setzero_ps(), off = _mm256_setzero_ps();
        for (int b = 0; b < n / 32; b++) {
            q4_0_r8_unpack(x + b, lo, hi);
            const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)x[b].d));
            q4_0_r8_scale(d, a + b, q4_0_r8_sum(lo, hi, a + b), &acc, &off);
        }
        _mm256_storeu_ps(y + (size_t)t * y_stride, _mm256_fnmadd_ps(eight, off, acc));
    }
}

VNNI static void gemv8_q8_0(int n, const void *w, const void *act, size_t act_row_bytes, int n_tokens, float *y,
                            int y_stride) {
    const block_q8_0_r8 *x = w;
    for (int t = 0; t < n_tokens; t++) {
        const act_a32 *a = token(act, act_row_bytes, t);
        __m256 acc = _mm256_setzero_ps();
        for (int b = 0; b < n / 32; b++) {
            __m256i s = _mm256_setzero_si256();
            for (int c = 0; c < 8; c++) {
                const __m256i q = _mm256_loadu_si256((const __m256i *)(x[b].qs + 32 * c));
                s = dpbusd(s, _mm256_sign_epi8(q, q), _mm256_sign_epi8(piece(a[b].qs, c), q));
            }
            const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)x[b].d));
            acc = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(a[b].d)), _mm256_cvtepi32_ps(s), acc);
        }
        _mm256_storeu_ps(y + (size_t)t * y_stride, acc);
    }
}

void register_avx512(qtype_kernels *t) {
    t[GT_Q4_0].dot8 = dot8_q4_0; t[GT_Q4_0].tier = "avx512";
    t[GT_Q8_0].dot8 = dot8_q8_0; t[GT_Q8_0].tier = "avx512";
    t[GT_Q4_0_R8].gemv8 = gemv8_q4_0; t[GT_Q4_0_R8].tier = "avx512";
    t[GT_Q8_0_R8].gemv8 = gemv8_q8_0; t[GT_Q8_0_R8].tier = "avx512";
}
#else
#include "kernels.h"
void register_avx512(qtype_kernels *t) { (void)t; }
#endif
