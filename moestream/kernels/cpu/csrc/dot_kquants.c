/* K-quant dot products (Q2_K..Q6_K x AK activations): generic and AVX2 tiers.
 *
 * All five formats use super-blocks of 256 weights with small integer per-sub-block scales (and, for
 * Q2_K/Q4_K/Q5_K, mins) times fp16 super-block factors. The activation block (act_ak) is
 * a_i = ad * qs_i with int8 qs and bsums[j] = sum of qs[16j..16j+15]. Per block the dot product is
 *
 *     sum_i w_i a_i = ad * (d * sum_s sc_s * sum_{i in s} q_i qs_i  -  dmin * sum_s m_s * sum_{i in s} qs_i)
 *
 * so everything inside the parentheses is integer arithmetic, and the min term needs only the bsums
 * (one 16-element dot per block). Where q is signed with a constant offset (Q3_K: q = u - 4, Q6_K:
 * q = u - 32) the offset is moved into the bsum term the same way, so the AVX2 tier always multiplies
 * unsigned weight codes with signed activations (maddubs).
 *
 * Element order inside a block (see moestream/formats/kquants.py, which is bit-exact with ggml):
 *   Q2_K/Q3_K: element 128h + 32s + l (h half, s shift 0..3, l 0..31) takes bits 2s..2s+1 of qs[32h + l];
 *              Q3_K's 3rd bit is bit (4h + s) of hmask[l]. Scale index = element / 16.
 *   Q4_K/Q5_K: sub-block j (32 elements) takes nibble (j & 1) of qs[32 (j/2) + l]; Q5_K's 5th bit is
 *              bit j of qh[l]. Scale/min index = j.
 *   Q6_K:      element 128h + 32k + l takes nibble (k / 2) of ql[64h + 32 (k % 2) + l] and bits 2k..2k+1
 *              of qh[32h + l]. Scale index = element / 16. */
#include <string.h>

#include "kernels.h"

/* GGUF K-quant blocks (byte layouts fixed by the file format). */
typedef struct { uint8_t scales[16]; uint8_t qs[64]; half d, dmin; } block_q2_k;
typedef struct { uint8_t hmask[32]; uint8_t qs[64]; uint8_t scales[12]; half d; } block_q3_k;
typedef struct { half d, dmin; uint8_t scales[12]; uint8_t qs[128]; } block_q4_k;
typedef struct { half d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; } block_q5_k;
typedef struct { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; half d; } block_q6_k;

_Static_assert(sizeof(block_q2_k) == 84, "Q2_K block size");
_Static_assert(sizeof(block_q3_k) == 110, "Q3_K block size");
_Static_assert(sizeof(block_q4_k) == 144, "Q4_K block size");
_Static_assert(sizeof(block_q5_k) == 176, "Q5_K block size");
_Static_assert(sizeof(block_q6_k) == 210, "Q6_K block size");

#define QK 256

/* ---- scale unpacking (shared by both tiers) ------------------------------------------------------- */

static inline uint32_t word(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline void put_word(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }

/* Q4_K/Q5_K: 8 six-bit scales and 8 six-bit mins from 12 bytes a|b|c (4 bytes each):
 * sc[0..3] = a & 63, mn[0..3] = b & 63,
 * sc[4+k] = low nibble of c[k] | (a[k] >> 6) << 4, mn[4+k] = high nibble of c[k] | (b[k] >> 6) << 4.
 * Done four bytes at a time. out[0..7] = scales, out[8..15] = mins. */
static inline void k4_scales_mins(const uint8_t packed[12], uint8_t out[16]) {
    const uint32_t a = word(packed), b = word(packed + 4), c = word(packed + 8);
    put_word(out + 0, a & 0x3f3f3f3fu);
    put_word(out + 4, (c & 0x0f0f0f0fu) | (((a >> 6) & 0x03030303u) << 4));
    put_word(out + 8, b & 0x3f3f3f3fu);
    put_word(out + 12, ((c >> 4) & 0x0f0f0f0fu) | (((b >> 6) & 0x03030303u) << 4));
}

/* Q3_K: 16 six-bit scales (stored +32) from 12 bytes a|b|c: scale i has its low 4 bits in byte i % 8 of
 * a|b (low nibble for i < 8, high nibble otherwise) and its high 2 bits at bit 2 (i / 4) of c[i % 4].
 * out[i] = unsigned 6-bit value (0..63); subtract 32 for the signed scale. */
static inline void q3_scales(const uint8_t packed[12], uint8_t out[16]) {
    const uint32_t a = word(packed), b = word(packed + 4), c = word(packed + 8);
    put_word(out + 0, (a & 0x0f0f0f0fu) | ((c & 0x03030303u) << 4));
    put_word(out + 4, (b & 0x0f0f0f0fu) | (((c >> 2) & 0x03030303u) << 4));
    put_word(out + 8, ((a >> 4) & 0x0f0f0f0fu) | (((c >> 4) & 0x03030303u) << 4));
    put_word(out + 12, ((b >> 4) & 0x0f0f0f0fu) | (((c >> 6) & 0x03030303u) << 4));
}

/* ---- generic tier: decode each block's codes into int8, then integer dots per sub-block ------------ */

#define H(x) half_to_float(x)

static inline int idot(const int8_t *q, const int8_t *a, int len) {
    int s = 0;
    for (int i = 0; i < len; i++) s += q[i] * a[i];
    return s;
}

static float dot_q2_k(int n, const void *w, const void *act) {
    const block_q2_k *x = w; const act_ak *y = act;
    float sum = 0.0f;
    for (int b = 0; b < n / QK; b++) {
        int8_t q[QK];
        for (int h = 0; h < 2; h++)
            for (int s = 0; s < 4; s++)
                for (int l = 0; l < 32; l++) q[128 * h + 32 * s + l] = (x[b].qs[32 * h + l] >> (2 * s)) & 3;
        int sumi = 0, summ = 0;
        for (int j = 0; j < 16; j++) {
            sumi += (x[b].scales[j] & 0x0f) * idot(q + 16 * j, y[b].qs + 16 * j, 16);
            summ += (x[b].scales[j] >> 4) * y[b].bsums[j];
        }
        sum += y[b].d * (H(x[b].d) * (float)sumi - H(x[b].dmin) * (float)summ);
    }
    return sum;
}

static float dot_q3_k(int n, const void *w, const void *act) {
    const block_q3_k *x = w; const act_ak *y = act;
    float sum = 0.0f;
    for (int b = 0; b < n / QK; b++) {
        int8_t q[QK];
        uint8_t sc[16];
        q3_scales(x[b].scales, sc);
        for (int h = 0; h < 2; h++)
            for (int s = 0; s < 4; s++)
                for (int l = 0; l < 32; l++) {
                    const int low = (x[b].qs[32 * h + l] >> (2 * s)) & 3;
                    const int high = (x[b].hmask[l] >> (4 * h + s)) & 1;
                    q[128 * h + 32 * s + l] = (int8_t)(low - (high ? 0 : 4));
                }
        int sumi = 0;
        for (int j = 0; j < 16; j++) sumi += (sc[j] - 32) * idot(q + 16 * j, y[b].qs + 16 * j, 16);
        sum += H(x[b].d) * y[b].d * (float)sumi;
    }
    return sum;
}

/* Q4_K/Q5_K block: 8 sub-blocks of 32 codes q with 6-bit scales sm[0..7] and mins sm[8..15];
 * x = d * scale * q - dmin * min, so the mins need only the activation block sums. */
static float k4_block_dot(const int8_t *q, const uint8_t sm[16], const act_ak *y, float d, float dmin) {
    int sumi = 0, summ = 0;
    for (int j = 0; j < 8; j++) {
        sumi += sm[j] * idot(q + 32 * j, y->qs + 32 * j, 32);
        summ += sm[8 + j] * (y->bsums[2 * j] + y->bsums[2 * j + 1]);
    }
    return y->d * (d * (float)sumi - dmin * (float)summ);
}

static float dot_q4_k(int n, const void *w, const void *act) {
    const block_q4_k *x = w; const act_ak *y = act;
    float sum = 0.0f;
    for (int b = 0; b < n / QK; b++) {
        int8_t q[QK];
        uint8_t sm[16];
        k4_scales_mins(x[b].scales, sm);
        for (int j = 0; j < 8; j++)
            for (int l = 0; l < 32; l++) q[32 * j + l] = (x[b].qs[32 * (j / 2) + l] >> (4 * (j & 1))) & 0x0f;
        sum += k4_block_dot(q, sm, &y[b], H(x[b].d), H(x[b].dmin));
    }
    return sum;
}

static float dot_q5_k(int n, const void *w, const void *act) {
    const block_q5_k *x = w; const act_ak *y = act;
    float sum = 0.0f;
    for (int b = 0; b < n / QK; b++) {
        int8_t q[QK];
        uint8_t sm[16];
        k4_scales_mins(x[b].scales, sm);
        for (int j = 0; j < 8; j++)
            for (int l = 0; l < 32; l++) {
                const int low = (x[b].qs[32 * (j / 2) + l] >> (4 * (j & 1))) & 0x0f;
                const int high = (x[b].qh[l] >> j) & 1;
                q[32 * j + l] = (int8_t)(low | (high << 4));
            }
        sum += k4_block_dot(q, sm, &y[b], H(x[b].d), H(x[b].dmin));
    }
    return sum;
}

static float dot_q6_k(int n, const void *w, const void *act) {
    const block_q6_k *x = w; const act_ak *y = act;
    float sum = 0.0f;
    for (int b = 0; b < n / QK; b++) {
        int8_t q[QK];
        for (int h = 0; h < 2; h++)
            for (int k = 0; k < 4; k++)
                for (int l = 0; l < 32; l++) {
                    const int low = (x[b].ql[64 * h + 32 * (k % 2) + l] >> (4 * (k / 2))) & 0x0f;
                    const int high = (x[b].qh[32 * h + l] >> (2 * k)) & 3;
                    q[128 * h + 32 * k + l] = (int8_t)((low | (high << 4)) - 32);
                }
        int sumi = 0;
        for (int j = 0; j < 16; j++) sumi += x[b].scales[j] * idot(q + 16 * j, y[b].qs + 16 * j, 16);
        sum += H(x[b].d) * y[b].d * (float)sumi;
    }
    return sum;
}

#undef H

static void set(qtype_kernels *t, int type, int size, vec_dot_fn fn) {
    t[type] = (qtype_kernels){ QK, size, ACT_AK, fn, "generic", NULL, 1, NULL };
}

void register_kquants_generic(qtype_kernels *t) {
    set(t, GT_Q2_K, sizeof(block_q2_k), dot_q2_k);
    set(t, GT_Q3_K, sizeof(block_q3_k), dot_q3_k);
    set(t, GT_Q4_K, sizeof(block_q4_k), dot_q4_k);
    set(t, GT_Q5_K, sizeof(block_q5_k), dot_q5_k);
    set(t, GT_Q6_K, sizeof(block_q6_k), dot_q6_k);
}

/* ---- AVX2 tier --------------------------------------------------------------------------------------
 * Weight codes are unsigned (Q2_K 0..3, Q3_K 0..7 = q + 4, Q4_K 0..15, Q5_K 0..31, Q6_K 0..63 = q + 32)
 * and activations int8 in [-128, 127], so maddubs pair sums are at most 2 * 63 * 128 = 16128 < 32767:
 * never saturated. madd with the int16 sub-block scales (|sc| <= 128) then gives int32 sums of at most
 * 2 * 16128 * 128 per lane and step, and a block adds 8 such steps per lane (< 2^25): no int32 overflow.
 * The bsum terms: |bsum| <= 2048, times |sc| <= 128 (Q6_K), pairs, times 32: < 2^25 as well. */
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define HF(x) _cvtsh_ss(x)

AVX2 static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AVX2 static inline float hsum4(__m128 s) {
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

AVX2 static inline __m256i load32(const void *p) { return _mm256_loadu_si256((const __m256i *)p); }

/* Byte-shuffle controls that pick int16 scales out of a register holding 8 int16 scales in both 128-bit
 * halves. RUN16[k]: low half = scale 2k, high half = scale 2k + 1 (a 32-element run made of two 16-element
 * sub-blocks, as maddubs lanes 0..7 cover elements 0..15). ALL8[j]: scale j in both halves. */
#define PAIR(lo, hi) (char)(lo), (char)(hi)
#define REP8(i) PAIR(2 * (i), 2 * (i) + 1), PAIR(2 * (i), 2 * (i) + 1), PAIR(2 * (i), 2 * (i) + 1), \
                PAIR(2 * (i), 2 * (i) + 1), PAIR(2 * (i), 2 * (i) + 1), PAIR(2 * (i), 2 * (i) + 1), \
                PAIR(2 * (i), 2 * (i) + 1), PAIR(2 * (i), 2 * (i) + 1)
static const char RUN16[4][32] __attribute__((aligned(32))) = {
    { REP8(0), REP8(1) }, { REP8(2), REP8(3) }, { REP8(4), REP8(5) }, { REP8(6), REP8(7) },
};
static const char ALL8[8][32] __attribute__((aligned(32))) = {
    { REP8(0), REP8(0) }, { REP8(1), REP8(1) }, { REP8(2), REP8(2) }, { REP8(3), REP8(3) },
    { REP8(4), REP8(4) }, { REP8(5), REP8(5) }, { REP8(6), REP8(6) }, { REP8(7), REP8(7) },
};
#undef REP8
#undef PAIR

AVX2 static inline __m256i pick(__m256i scales, const char ctrl[32]) {
    return _mm256_shuffle_epi8(scales, _mm256_load_si256((const __m256i *)ctrl));
}

/* u: 32 unsigned codes, a: 32 int8 activations, sc: int16 scales per maddubs lane -> 8 int32 sums */
AVX2 static inline __m256i scaled_dot(__m256i u, const int8_t *a, __m256i sc) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, load32(a)), sc);
}

/* 8 bytes (unsigned / signed) -> 8 int16 in both halves of a 256-bit register */
AVX2 static inline __m256i bcast_u8x8(const uint8_t *p) {
    return _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)p)));
}
AVX2 static inline __m256i bcast_i8x8(const void *p) {
    return _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)p)));
}

AVX2 static float dot_q2_k_avx2(int n, const void *w, const void *act) {
    const block_q2_k *x = w; const act_ak *y = act;
    const __m256i m3 = _mm256_set1_epi8(3);
    const __m128i m15 = _mm_set1_epi8(0x0f);
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < n / QK; b++) {
        const __m128i packed = _mm_loadu_si128((const __m128i *)x[b].scales);
        uint8_t sc[16];
        _mm_storeu_si128((__m128i *)sc, _mm_and_si128(packed, m15));
        const __m256i mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 4), m15));
        const __m256i summ = _mm256_madd_epi16(load32(y[b].bsums), mins);
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const __m256i q = load32(x[b].qs + 32 * h);
            const __m256i sch = bcast_u8x8(sc + 8 * h);
            const int8_t *a = y[b].qs + 128 * h;
            sumi = _mm256_add_epi32(sumi, scaled_dot(_mm256_and_si256(q, m3), a, pick(sch, RUN16[0])));
            sumi = _mm256_add_epi32(sumi, scaled_dot(_mm256_and_si256(_mm256_srli_epi16(q, 2), m3), a + 32,
                                                     pick(sch, RUN16[1])));
            sumi = _mm256_add_epi32(sumi, scaled_dot(_mm256_and_si256(_mm256_srli_epi16(q, 4), m3), a + 64,
                                                     pick(sch, RUN16[2])));
            sumi = _mm256_add_epi32(sumi, scaled_dot(_mm256_and_si256(_mm256_srli_epi16(q, 6), m3), a + 96,
                                                     pick(sch, RUN16[3])));
        }
        const float ad = y[b].d;
        acc = _mm256_fmadd_ps(_mm256_set1_ps(HF(x[b].d) * ad), _mm256_cvtepi32_ps(sumi), acc);
        acc = _mm256_fmadd_ps(_mm256_set1_ps(-HF(x[b].dmin) * ad), _mm256_cvtepi32_ps(summ), acc);
    }
    return hsum8(acc);
}

AVX2 static float dot_q3_k_avx2(int n, const void *w, const void *act) {
    const block_q3_k *x = w; const act_ak *y = act;
    const __m256i m3 = _mm256_set1_epi8(3), m4 = _mm256_set1_epi8(4);
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < n / QK; b++) {
        uint8_t raw[16];
        q3_scales(x[b].scales, raw);
        int8_t sc[16];
        const __m128i sc8 = _mm_sub_epi8(_mm_loadu_si128((const __m128i *)raw), _mm_set1_epi8(32));
        _mm_storeu_si128((__m128i *)sc, sc8);
        /* codes u = q + 4 in 0..7; the -4 goes to the bsum term: sum sc * q * a = sum sc * u * a - 4 sum sc * bsum */
        const __m256i offset = _mm256_madd_epi16(load32(y[b].bsums), _mm256_cvtepi8_epi16(sc8));
        __m256i sumi = _mm256_setzero_si256();
        __m256i hm = load32(x[b].hmask);  /* after r right shifts, bit 0 of each byte is hmask bit r */
        for (int h = 0; h < 2; h++) {
            const __m256i q = load32(x[b].qs + 32 * h);
            const __m256i sch = bcast_i8x8(sc + 8 * h);
            const int8_t *a = y[b].qs + 128 * h;
            for (int s = 0; s < 4; s++) {
                const __m256i low = _mm256_and_si256(_mm256_srl_epi16(q, _mm_cvtsi32_si128(2 * s)), m3);
                const __m256i high = _mm256_and_si256(_mm256_slli_epi16(hm, 2), m4);
                hm = _mm256_srli_epi16(hm, 1);
                sumi = _mm256_add_epi32(sumi, scaled_dot(_mm256_or_si256(low, high), a + 32 * s, pick(sch, RUN16[s])));
            }
        }
        sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(offset, 2));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(HF(x[b].d) * y[b].d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum8(acc);
}

/* Q4_K/Q5_K min term of one block: 8 int32 lanes of sum_j mn_j * (bsums[2j] + bsums[2j+1]) partials */
AVX2 static inline __m128i k4_mins(const act_ak *y, const uint8_t mn[8]) {
    const __m128i pairs = _mm_hadd_epi16(_mm_loadu_si128((const __m128i *)y->bsums),
                                         _mm_loadu_si128((const __m128i *)(y->bsums + 8)));  /* |.| <= 4096 */
    return _mm_madd_epi16(pairs, _mm_cvtepu8_epi16(_mm_loadl_epi64((const __m128i *)mn)));
}

AVX2 static float dot_q4_k_avx2(int n, const void *w, const void *act) {
    const block_q4_k *x = w; const act_ak *y = act;
    const __m256i m15 = _mm256_set1_epi8(0x0f);
    __m256 acc = _mm256_setzero_ps();
    __m128 accm = _mm_setzero_ps();
    for (int b = 0; b < n / QK; b++) {
        uint8_t sm[16];
        k4_scales_mins(x[b].scales, sm);
        const __m256i sc = bcast_u8x8(sm);
        __m256i sumi = _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            const __m256i q = load32(x[b].qs + 32 * c);
            const int8_t *a = y[b].qs + 64 * c;
            sumi = _mm256_add_epi32(sumi, scaled_dot(_mm256_and_si256(q, m15), a, pick(sc, ALL8[2 * c])));
            sumi = _mm256_add_epi32(sumi, scaled_dot(_mm256_and_si256(_mm256_srli_epi16(q, 4), m15), a + 32,
                                                     pick(sc, ALL8[2 * c + 1])));
        }
        const float ad = y[b].d;
        acc = _mm256_fmadd_ps(_mm256_set1_ps(HF(x[b].d) * ad), _mm256_cvtepi32_ps(sumi), acc);
        accm = _mm_fmadd_ps(_mm_set1_ps(HF(x[b].dmin) * ad), _mm_cvtepi32_ps(k4_mins(&y[b], sm + 8)), accm);
    }
    return hsum8(acc) - hsum4(accm);
}

AVX2 static float dot_q5_k_avx2(int n, const void *w, const void *act) {
    const block_q5_k *x = w; const act_ak *y = act;
    const __m256i m15 = _mm256_set1_epi8(0x0f), m16 = _mm256_set1_epi8(0x10);
    __m256 acc = _mm256_setzero_ps();
    __m128 accm = _mm_setzero_ps();
    for (int b = 0; b < n / QK; b++) {
        uint8_t sm[16];
        k4_scales_mins(x[b].scales, sm);
        const __m256i sc = bcast_u8x8(sm);
        __m256i hb = load32(x[b].qh);  /* after j right shifts, bit 0 of each byte is qh bit j */
        __m256i sumi = _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            const __m256i q = load32(x[b].qs + 32 * c);
            const int8_t *a = y[b].qs + 64 * c;
            const __m256i lo = _mm256_or_si256(_mm256_and_si256(q, m15),
                                               _mm256_and_si256(_mm256_slli_epi16(hb, 4), m16));
            const __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), m15),
                                               _mm256_and_si256(_mm256_slli_epi16(hb, 3), m16));
            hb = _mm256_srli_epi16(hb, 2);
            sumi = _mm256_add_epi32(sumi, scaled_dot(lo, a, pick(sc, ALL8[2 * c])));
            sumi = _mm256_add_epi32(sumi, scaled_dot(hi, a + 32, pick(sc, ALL8[2 * c + 1])));
        }
        const float ad = y[b].d;
        acc = _mm256_fmadd_ps(_mm256_set1_ps(HF(x[b].d) * ad), _mm256_cvtepi32_ps(sumi), acc);
        accm = _mm_fmadd_ps(_mm_set1_ps(HF(x[b].dmin) * ad), _mm_cvtepi32_ps(k4_mins(&y[b], sm + 8)), accm);
    }
    return hsum8(acc) - hsum4(accm);
}

AVX2 static float dot_q6_k_avx2(int n, const void *w, const void *act) {
    const block_q6_k *x = w; const act_ak *y = act;
    const __m256i m15 = _mm256_set1_epi8(0x0f), m48 = _mm256_set1_epi8(0x30);
    __m256 acc = _mm256_setzero_ps();
    for (int b = 0; b < n / QK; b++) {
        /* codes u = q + 32 in 0..63; the -32 goes to the bsum term */
        const __m256i offset = _mm256_madd_epi16(load32(y[b].bsums),
                                                 _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)x[b].scales)));
        __m256i sumi = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            const __m256i ql0 = load32(x[b].ql + 64 * h), ql1 = load32(x[b].ql + 64 * h + 32);
            const __m256i qh = load32(x[b].qh + 32 * h);
            const __m256i sch = bcast_i8x8(x[b].scales + 8 * h);
            const int8_t *a = y[b].qs + 128 * h;
            const __m256i u0 = _mm256_or_si256(_mm256_and_si256(ql0, m15), _mm256_and_si256(_mm256_slli_epi16(qh, 4), m48));
            const __m256i u1 = _mm256_or_si256(_mm256_and_si256(ql1, m15), _mm256_and_si256(_mm256_slli_epi16(qh, 2), m48));
            const __m256i u2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), m15), _mm256_and_si256(qh, m48));
            const __m256i u3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), m15),
                                               _mm256_and_si256(_mm256_srli_epi16(qh, 2), m48));
            sumi = _mm256_add_epi32(sumi, scaled_dot(u0, a, pick(sch, RUN16[0])));
            sumi = _mm256_add_epi32(sumi, scaled_dot(u1, a + 32, pick(sch, RUN16[1])));
            sumi = _mm256_add_epi32(sumi, scaled_dot(u2, a + 64, pick(sch, RUN16[2])));
            sumi = _mm256_add_epi32(sumi, scaled_dot(u3, a + 96, pick(sch, RUN16[3])));
        }
        sumi = _mm256_sub_epi32(sumi, _mm256_slli_epi32(offset, 5));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(HF(x[b].d) * y[b].d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return hsum8(acc);
}

static void use(qtype_kernels *t, int type, vec_dot_fn fn) { t[type].dot = fn; t[type].tier = "avx2"; }

void register_kquants_avx2(qtype_kernels *t) {
    use(t, GT_Q2_K, dot_q2_k_avx2);
    use(t, GT_Q3_K, dot_q3_k_avx2);
    use(t, GT_Q4_K, dot_q4_k_avx2);
    use(t, GT_Q5_K, dot_q5_k_avx2);
    use(t, GT_Q6_K, dot_q6_k_avx2);
}
#else
void register_kquants_avx2(qtype_kernels *t) { (void)t; }
#endif
