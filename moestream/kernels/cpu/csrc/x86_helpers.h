/* 256-bit helpers the x86 tiers share (dot_avx2.c, packed_avx2.c, dot_avx512.c). No include guard on purpose:
 * each tier defines SIMD_TARGET (its target attribute) and includes this once, so every file gets its own copy
 * compiled for its own instruction set. */
#ifndef SIMD_TARGET
#error "define SIMD_TARGET (the including tier's target attribute) before including x86_helpers.h"
#endif
#include <immintrin.h>

#include "kernels.h"
#include "packed.h"

SIMD_TARGET static inline __m256i nibbles(const uint8_t qs[16]) {
    /* bytes 0..15: low nibbles, 16..31: high nibbles (GGUF order of the 32 elements) */
    const __m128i q = _mm_loadu_si128((const __m128i *)qs);
    const __m256i both = _mm256_set_m128i(_mm_srli_epi16(q, 4), q);
    return _mm256_and_si256(both, _mm256_set1_epi8(0x0f));
}

SIMD_TARGET static inline __m256i sum_lanes8(const __m256i v[8]) {
    /* lane r = exact sum of v[r]'s 8 int32 lanes */
    const __m256i s0123 = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    const __m256i s4567 = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
    return _mm256_add_epi32(_mm256_permute2x128_si256(s0123, s4567, 0x20),
                            _mm256_permute2x128_si256(s0123, s4567, 0x31));
}

SIMD_TARGET static inline __m256 scales8(const uint8_t *w, size_t row_bytes) {
    /* the fp16 scale at the start of the block at w in each of 8 rows, as floats */
    uint16_t d[8];
    for (int r = 0; r < 8; r++) __builtin_memcpy(&d[r], w + r * row_bytes, 2);
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)d));
}

SIMD_TARGET static inline __m256i piece(const int8_t *qs, int i) {
    /* activation elements 4i..4i+3, in every lane */
    int32_t v;
    __builtin_memcpy(&v, qs + 4 * i, 4);
    return _mm256_set1_epi32(v);
}

SIMD_TARGET static inline const act_a32 *token(const void *act, size_t act_row_bytes, int t) {
    return (const act_a32 *)((const uint8_t *)act + (size_t)t * act_row_bytes);
}

SIMD_TARGET static inline void q4_0_r8_unpack(const block_q4_0_r8 *x, __m256i lo[4], __m256i hi[4]) {
    const __m256i low = _mm256_set1_epi8(0x0f);
    for (int c = 0; c < 4; c++) {
        const __m256i q = _mm256_loadu_si256((const __m256i *)(x->qs + 32 * c));
        lo[c] = _mm256_and_si256(q, low);
        hi[c] = _mm256_and_si256(_mm256_srli_epi16(q, 4), low);
    }
}
