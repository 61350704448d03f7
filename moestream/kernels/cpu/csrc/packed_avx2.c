/* AVX2 kernels of the packed layouts (packed.c): each 32-byte chunk holds 4 elements of each of 8 rows, so maddubs
 * against one broadcast 4-byte piece of the activation leaves row r's partial sums in 32-bit lane r. */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#include "kernels.h"
#include "packed.h"

#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define SIMD_TARGET AVX2
#include "x86_helpers.h"

AVX2 static inline __m256i q4_0_r8_sum(const __m256i lo[4], const __m256i hi[4], const act_a32 *a) {
    /* one token and block column: per row, sum_j nib_j a_j exactly in int16 (8 pieces x 2 products of |nib| <= 15,
     * |a| <= 127: <= 30480) */
    __m256i s = _mm256_setzero_si256();
    for (int c = 0; c < 4; c++) {
        s = _mm256_add_epi16(s, _mm256_maddubs_epi16(lo[c], piece(a->qs, c)));
        s = _mm256_add_epi16(s, _mm256_maddubs_epi16(hi[c], piece(a->qs, c + 4)));
    }
    return s;
}

AVX2 static inline void q4_0_r8_scale(__m256 d, const act_a32 *a, __m256i sum, __m256 *acc, __m256 *off) {
    /* d_w d_a times the block sum; the offset sums d_w (d_a sum a), taken 8 times at the end, as dot_q4_0 does */
    const __m256 isum = _mm256_cvtepi32_ps(_mm256_madd_epi16(sum, _mm256_set1_epi16(1)));
    *acc = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(a->d)), isum, *acc);
    *off = _mm256_fmadd_ps(d, _mm256_set1_ps(a->s), *off);
}

AVX2 static void gemv8_q4_0(int n, const void *w, const void *act, size_t act_row_bytes, int n_tokens, float *y,
                            int y_stride) {
    /* tokens two at a time (prefill): each block's nibbles are unpacked once for both; per token the arithmetic is
     * the one-token loop's, so results do not depend on how many tokens a call has */
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
            const __m256i s0 = q4_0_r8_sum(lo, hi, a0 + b), s1 = q4_0_r8_sum(lo, hi, a1 + b);
            const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)x[b].d));
            q4_0_r8_scale(d, a0 + b, s0, &acc0, &off0);
            q4_0_r8_scale(d, a1 + b, s1, &acc1, &off1);
        }
        _mm256_storeu_ps(y + (size_t)t * y_stride, _mm256_fnmadd_ps(eight, off0, acc0));
        _mm256_storeu_ps(y + (size_t)(t + 1) * y_stride, _mm256_fnmadd_ps(eight, off1, acc1));
    }
    for (; t < n_tokens; t++) {
        const act_a32 *a = token(act, act_row_bytes, t);
        __m256 acc = _mm256_setzero_ps(), off = _mm256_setzero_ps();
        for (int b = 0; b < n / 32; b++) {
            q4_0_r8_unpack(x + b, lo, hi);
            const __m256i s = q4_0_r8_sum(lo, hi, a + b);
            q4_0_r8_scale(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)x[b].d)), a + b, s, &acc, &off);
        }
        _mm256_storeu_ps(y + (size_t)t * y_stride, _mm256_fnmadd_ps(eight, off, acc));
    }
}

AVX2 static void gemv8_q8_0(int n, const void *w, const void *act, size_t act_row_bytes, int n_tokens, float *y,
                            int y_stride) {
    /* signed x signed through the sign trick (|w| x a*sign(w)); pairs fit int16, pieces are summed in int32 */
    const block_q8_0_r8 *x = w;
    const __m256i ones = _mm256_set1_epi16(1);
    for (int t = 0; t < n_tokens; t++) {
        const act_a32 *a = (const act_a32 *)((const uint8_t *)act + (size_t)t * act_row_bytes);
        __m256 acc = _mm256_setzero_ps();
        for (int b = 0; b < n / 32; b++) {
            __m256i s = _mm256_setzero_si256();
            for (int c = 0; c < 8; c++) {
                const __m256i q = _mm256_loadu_si256((const __m256i *)(x[b].qs + 32 * c));
                const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(q, q), _mm256_sign_epi8(piece(a[b].qs, c), q));
                s = _mm256_add_epi32(s, _mm256_madd_epi16(p, ones));
            }
            const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)x[b].d));
            acc = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(a[b].d)), _mm256_cvtepi32_ps(s), acc);
        }
        _mm256_storeu_ps(y + (size_t)t * y_stride, acc);
    }
}

void register_packed_avx2(qtype_kernels *t) {
    t[GT_Q4_0_R8].gemv8 = gemv8_q4_0; t[GT_Q4_0_R8].tier = "avx2";
    t[GT_Q8_0_R8].gemv8 = gemv8_q8_0; t[GT_Q8_0_R8].tier = "avx2";
}
#else
#include "kernels.h"
void register_packed_avx2(qtype_kernels *t) { (void)t; }
#endif
