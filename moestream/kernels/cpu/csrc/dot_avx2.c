/* AVX2 + FMA + F16C tier. Integer dots use the sign trick: |w| (unsigned) x (a with w's sign) through
 * maddubs gives exact int16 pair sums (|w| <= 128, |a| <= 127, so no saturation), madd widens to int32. */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#include <string.h>

#include "kernels.h"

#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define SIMD_TARGET AVX2
#include "x86_helpers.h"

AVX2 static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AVX2 static inline __m256 dot_i8(__m256i w, __m256i a) {
    /* w, a: 32 signed bytes -> 8 float partial sums of w*a */
    const __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(a, w));
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)));
}

AVX2 static inline __m256 dot_u8(__m256i w, __m256i a) {
    /* w: 32 unsigned bytes < 128, a: 32 signed bytes */
    return _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(w, a), _mm256_set1_epi16(1)));
}

AVX2 static inline __m256i fifth_bits(const uint8_t qh[4]) {
    /* byte j = 0x10 if bit j of the little-endian 32-bit qh is set, else 0 */
    uint32_t bits;
    memcpy(&bits, qh, 4);
    const __m256i pick = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                          2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_setr_epi8(1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128,
                                         1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128);
    const __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), pick);
    const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
    return _mm256_and_si256(set, _mm256_set1_epi8(0x10));
}

#define H(x) _cvtsh_ss(x)

AVX2 static inline int isum8(__m256i v) {
    /* exact sum of 8 int32 lanes */
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

AVX2 static inline float fma1(float a, float b, float c) {
    return _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(a), _mm_set_ss(b), _mm_set_ss(c)));
}

AVX2 static float dot_q4_0(int n, const void *w, const void *a) {
    /* sum_j (nib_j - 8) a_j = sum_j nib_j a_j - 8 sum_j a_j: unsigned nibbles go straight into maddubs and the
     * offset uses the activation block sum (y.s = y.d * sum a). The float arithmetic is packed_avx2.c's per lane,
     * block by block: acc = fma(d_w d_a, exact block sum, acc), off = fma(d_w, s_a, off), result acc - 8 off in one
     * rounding; so a packed weight gives bit-identical outputs (the cache may pack an expert between two steps) */
    const block_q4_0 *x = w; const act_a32 *y = a;
    const __m256i ones = _mm256_set1_epi16(1);
    float acc = 0.0f, off = 0.0f;
    for (int b = 0; b < n / 32; b++) {
        const __m256i qa = _mm256_loadu_si256((const __m256i *)y[b].qs);
        const int isum = isum8(_mm256_madd_epi16(_mm256_maddubs_epi16(nibbles(x[b].qs), qa), ones));
        const float d = H(x[b].d);
        acc = fma1(d * y[b].d, (float)isum, acc);
        off = fma1(d, y[b].s, off);
    }
    return fma1(-8.0f, off, acc);
}

AVX2 static void dot8_q4_0(int n, const void *w, size_t row_bytes, const void *act, float *y8) {
    /* dot_q4_0 for 8 rows, lane r = row r, with its arithmetic (see there) */
    const uint8_t *x = w; const act_a32 *y = act;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc = _mm256_setzero_ps(), off = _mm256_setzero_ps();
    for (int b = 0; b < n / 32; b++) {
        const uint8_t *blk = x + (size_t)b * sizeof(block_q4_0);
        const __m256i qa = _mm256_loadu_si256((const __m256i *)y[b].qs);
        __m256i v[8];
        for (int r = 0; r < 8; r++)
            v[r] = _mm256_madd_epi16(_mm256_maddubs_epi16(nibbles(blk + r * row_bytes + 2), qa), ones);
        const __m256 d = scales8(blk, row_bytes);
        acc = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_set1_ps(y[b].d)), _mm256_cvtepi32_ps(sum_lanes8(v)), acc);
        off = _mm256_fmadd_ps(d, _mm256_set1_ps(y[b].s), off);
    }
    _mm256_storeu_ps(y8, _mm256_fnmadd_ps(_mm256_set1_ps(8.0f), off, acc));
}

AVX2 static void dot8_q8_0(int n, const void *w, size_t row_bytes, const void *act, float *y8) {
    const uint8_t *x = w; const act_a32 *y = act;
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < n / 32; b++) {
        const uint8_t *blk = x + (size_t)b * sizeof(block_q8_0);
        const __m256i qa = _mm256_loadu_si256((const __m256i *)y[b].qs);
        __m256i v[8];
        for (int r = 0; r < 8; r++) {
            const __m256i q = _mm256_loadu_si256((const __m256i *)(blk + r * row_bytes + 2));
            v[r] = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(q, q), _mm256_sign_epi8(qa, q)), ones);
        }
        acc = _mm256_fmadd_ps(_mm256_mul_ps(scales8(blk, row_bytes), _mm256_set1_ps(y[b].d)),
                              _mm256_cvtepi32_ps(sum_lanes8(v)), acc);
    }
    _mm256_storeu_ps(y8, acc);
}

AVX2 static float dot_q4_1(int n, const void *w, const void *a) {
    const block_q4_1 *x = w; const act_a32 *y = a;
    __m256 acc = _mm256_setzero_ps();
    float mins = 0.0f;
    for (int b = 0; b < n / 32; b++) {
        const __m256i qa = _mm256_loadu_si256((const __m256i *)y[b].qs);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(H(x[b].d) * y[b].d), dot_u8(nibbles(x[b].qs), qa), acc);
        mins += H(x[b].m) * y[b].s;
    }
    return hsum(acc) + mins;
}

AVX2 static float dot_q5_0(int n, const void *w, const void *a) {
    const block_q5_0 *x = w; const act_a32 *y = a;
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < n / 32; b++) {
        const __m256i q5 = _mm256_or_si256(nibbles(x[b].qs), fifth_bits(x[b].qh));
        const __m256i q = _mm256_sub_epi8(q5, _mm256_set1_epi8(16));
        const __m256i qa = _mm256_loadu_si256((const __m256i *)y[b].qs);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(H(x[b].d) * y[b].d), dot_i8(q, qa), acc);
    }
    return hsum(acc);
}

AVX2 static float dot_q5_1(int n, const void *w, const void *a) {
    const block_q5_1 *x = w; const act_a32 *y = a;
    __m256 acc = _mm256_setzero_ps();
    float mins = 0.0f;
    for (int b = 0; b < n / 32; b++) {
        const __m256i q5 = _mm256_or_si256(nibbles(x[b].qs), fifth_bits(x[b].qh));
        const __m256i qa = _mm256_loadu_si256((const __m256i *)y[b].qs);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(H(x[b].d) * y[b].d), dot_u8(q5, qa), acc);
        mins += H(x[b].m) * y[b].s;
    }
    return hsum(acc) + mins;
}

AVX2 static float dot_q8_0(int n, const void *w, const void *a) {
    /* acc = fma(d_w d_a, exact block sum, acc) block by block, as packed_avx2.c does per lane (see dot_q4_0) */
    const block_q8_0 *x = w; const act_a32 *y = a;
    const __m256i ones = _mm256_set1_epi16(1);
    float acc = 0.0f;
    for (int b = 0; b < n / 32; b++) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)x[b].qs);
        const __m256i qa = _mm256_loadu_si256((const __m256i *)y[b].qs);
        const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(q, q), _mm256_sign_epi8(qa, q));
        acc = fma1(H(x[b].d) * y[b].d, (float)isum8(_mm256_madd_epi16(p, ones)), acc);
    }
    return acc;
}

AVX2 static float dot_mxfp4(int n, const void *w, const void *a) {
    /* codes -> their doubled E2M1 values by one byte shuffle, then dot_q8_0's exact block sum */
    const block_mxfp4 *x = w; const act_a32 *y = a;
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i values = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)MXFP4_VALUES));
    float acc = 0.0f;
    for (int b = 0; b < n / 32; b++) {
        const __m256i q = _mm256_shuffle_epi8(values, nibbles(x[b].qs));
        const __m256i qa = _mm256_loadu_si256((const __m256i *)y[b].qs);
        const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(q, q), _mm256_sign_epi8(qa, q));
        acc = fma1(e8m0_half(x[b].e) * y[b].d, (float)isum8(_mm256_madd_epi16(p, ones)), acc);
    }
    return acc;
}

AVX2 static void dot8_mxfp4(int n, const void *w, size_t row_bytes, const void *act, float *y8) {
    /* dot_mxfp4 for 8 rows, lane r = row r, with its arithmetic per lane (mul of the scales, then one fma) */
    const uint8_t *x = w; const act_a32 *y = act;
    const __m256i ones = _mm256_set1_epi16(1);
    const __m256i values = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)MXFP4_VALUES));
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < n / 32; b++) {
        const uint8_t *blk = x + (size_t)b * sizeof(block_mxfp4);
        const __m256i qa = _mm256_loadu_si256((const __m256i *)y[b].qs);
        __m256i v[8];
        float d[8];
        for (int r = 0; r < 8; r++) {
            const __m256i q = _mm256_shuffle_epi8(values, nibbles(blk + r * row_bytes + 1));
            v[r] = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(q, q), _mm256_sign_epi8(qa, q)), ones);
            d[r] = e8m0_half(blk[r * row_bytes]);
        }
        acc = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_loadu_ps(d), _mm256_set1_ps(y[b].d)),
                              _mm256_cvtepi32_ps(sum_lanes8(v)), acc);
    }
    _mm256_storeu_ps(y8, acc);
}

AVX2 static float tail_f32(int start, int n, const float *x, const float *y) {
    float s = 0.0f;
    for (int i = start; i < n; i++) s += x[i] * y[i];
    return s;
}

AVX2 static float dot_f32(int n, const void *w, const void *a) {
    const float *x = w, *y = a;
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(y + i + 8), s1);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i), s0);
    return hsum(_mm256_add_ps(s0, s1)) + tail_f32(i, n, x, y);
}

AVX2 static float dot_f16(int n, const void *w, const void *a) {
    const half *x = w; const float *y = a;
    __m256 s = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8)
        s = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i))), _mm256_loadu_ps(y + i), s);
    float tail = 0.0f;
    for (; i < n; i++) tail += H(x[i]) * y[i];
    return hsum(s) + tail;
}

AVX2 static float dot_bf16(int n, const void *w, const void *a) {
    const uint16_t *x = w; const float *y = a;
    __m256 s = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(x + i)));
        s = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(wide, 16)), _mm256_loadu_ps(y + i), s);
    }
    float tail = 0.0f;
    for (; i < n; i++) tail += bf16_to_float(x[i]) * y[i];
    return hsum(s) + tail;
}

static void use(qtype_kernels *t, int type, vec_dot_fn fn) { t[type].dot = fn; t[type].tier = "avx2"; }

void register_avx2(qtype_kernels *t) {
    use(t, GT_Q4_0, dot_q4_0); use(t, GT_Q4_1, dot_q4_1); use(t, GT_Q5_0, dot_q5_0);
    use(t, GT_Q5_1, dot_q5_1); use(t, GT_Q8_0, dot_q8_0); use(t, GT_MXFP4, dot_mxfp4);
    use(t, GT_F32, dot_f32); use(t, GT_F16, dot_f16); use(t, GT_BF16, dot_bf16);
    t[GT_Q4_0].dot8 = dot8_q4_0; t[GT_Q8_0].dot8 = dot8_q8_0; t[GT_MXFP4].dot8 = dot8_mxfp4;
}
#else
#include "kernels.h"
void register_avx2(qtype_kernels *t) { (void)t; }
#endif
