/* Quantize an activation row into the partner format of the weight type, once per matmul call.
 *
 * Every block has a defined result whatever its values (converting NaN, inf or an out-of-range float to an
 * integer is undefined behaviour in C, so no such value ever reaches a conversion):
 * - a block holding NaN or +-inf gets scale NaN and zero codes, so every output that reads it is NaN
 *   (as an exact float product would be NaN or inf there; kernels/reference.py gives NaN too);
 * - a block whose scale is 0 in its stored format (all zeros, subnormals, or so tiny that 1/scale overflows)
 *   gets scale 0 and zero codes: it contributes exactly 0;
 * - otherwise codes are |x| / scale <= 127 (128 for AK), finite by construction. An A32 block whose max exceeds
 *   the fp16 range of its scale (~8.3e6) gets an inf scale, exactly as llama.cpp's Q8_0 activations, so its
 *   outputs are inf or NaN. */
#include <math.h>
#include <string.h>

#include "kernels.h"

size_t act_row_bytes(enum act_kind act, int n) {
    switch (act) {
    case ACT_A32: return (size_t)(n / 32) * sizeof(act_a32);
    case ACT_AK: return (size_t)(n / 256) * sizeof(act_ak);
    default: return (size_t)n * sizeof(float);
    }
}

static half float_to_half(float f) {
    /* round to nearest even; overflow -> inf; keeps NaN a NaN */
    union { float f; uint32_t u; } v = { f };
    const uint32_t sign = (v.u >> 16) & 0x8000, exp8 = (v.u >> 23) & 0xff;
    uint32_t mant = v.u & 0x7fffff;
    const int exp = (int)exp8 - 127 + 15;
    if (exp8 == 0xff) return (half)(sign | 0x7c00 | (mant ? 0x200 : 0));
    if (exp >= 31) return (half)(sign | 0x7c00);
    if (exp <= 0) {  /* half subnormal (or zero) */
        if (exp < -10) return (half)sign;
        mant |= 0x800000;
        const int shift = 14 - exp;
        uint32_t h = mant >> shift;
        const uint32_t rem = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (h & 1))) h++;
        return (half)(sign | h);
    }
    uint32_t h = ((uint32_t)exp << 10) | (mant >> 13);
    const uint32_t rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;  /* a carry into the exponent is still right */
    return (half)(sign | h);
}

static int block_max(const float *x, int n, float *amax) {
    /* *amax = max |x_j|; returns 0 if some x_j is NaN or +-inf (fmaxf alone would skip a NaN) */
    float m = 0.0f;
    int finite = 1;
    for (int j = 0; j < n; j++) {
        m = fmaxf(m, fabsf(x[j]));
        finite &= isfinite(x[j]) != 0;
    }
    *amax = m;
    return finite;
}

static void quantize_a32(const float *x, act_a32 *y, int n) {
    /* exactly llama.cpp's Q8_0 activations: codes from the fp32 scale rounded half away from zero (roundf),
     * the scale itself kept as fp16, so that results agree with llama.cpp's bit for bit in the integer part */
    for (int b = 0; b < n / 32; b++, x += 32) {
        float amax;
        const int finite = block_max(x, 32, &amax);
        const float d = amax / 127.0f, dh = half_to_float(float_to_half(d));
        if (!finite || dh == 0.0f) {  /* scale 0 (tiny block) or NaN (non-finite block); see the top */
            memset(&y[b], 0, sizeof(act_a32));
            y[b].d = y[b].s = finite ? 0.0f : NAN;
            continue;
        }
        const float id = 1.0f / d;  /* d >= 2^-25 here, so finite; |x_j * id| <= 127 */
        int sum = 0;
        for (int j = 0; j < 32; j++) {
            y[b].qs[j] = (int8_t)roundf(x[j] * id);
            sum += y[b].qs[j];
        }
        y[b].d = dh;
        y[b].s = dh * (float)sum;
    }
}

static void quantize_ak(const float *x, act_ak *y, int n) {
    /* like ggml's Q8_K: scale from the signed value of largest magnitude, so it maps to -128 exactly */
    for (int b = 0; b < n / 256; b++, x += 256) {
        float amax = 0.0f, max = 0.0f;
        int finite = 1;
        for (int j = 0; j < 256; j++) {
            if (fabsf(x[j]) > amax) { amax = fabsf(x[j]); max = x[j]; }
            finite &= isfinite(x[j]) != 0;
        }
        const float iscale = -128.0f / max;  /* +-inf when max is 0 or below ~3.8e-37 */
        if (!finite || !isfinite(iscale)) {  /* NaN (non-finite block) or 0 (tiny block); see the top */
            memset(&y[b], 0, sizeof(act_ak));
            y[b].d = finite ? 0.0f : NAN;
            continue;
        }
        for (int j = 0; j < 256; j++) {
            int v = (int)lrintf(iscale * x[j]);  /* |iscale * x_j| <= 128 (plus rounding) */
            y[b].qs[j] = (int8_t)(v > 127 ? 127 : v);
        }
        for (int j = 0; j < 16; j++) {
            int sum = 0;
            for (int i = 0; i < 16; i++) sum += y[b].qs[16 * j + i];
            y[b].bsums[j] = (int16_t)sum;
        }
        y[b].d = 1.0f / iscale;
    }
}

void quantize_act_row(enum act_kind act, const float *x, void *out, int n) {
    if (act == ACT_A32) quantize_a32(x, (act_a32 *)out, n);
    else if (act == ACT_AK) quantize_ak(x, (act_ak *)out, n);
    else memcpy(out, x, (size_t)n * sizeof(float));
}

float half_to_float(half h) {
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff;
    union { uint32_t u; float f; } v;
    if (exp == 0) {
        if (mant == 0) { v.u = sign; return v.f; }
        float f = ldexpf((float)mant, -24);  /* subnormal */
        return sign ? -f : f;
    }
    if (exp == 31) v.u = sign | 0x7f800000u | (mant << 13);
    else v.u = sign | ((exp + 112) << 23) | (mant << 13);
    return v.f;
}
