/* Quantize an activation row into the partner format of the weight type, once per matmul call. */
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

static void quantize_a32(const float *x, act_a32 *y, int n) {
    for (int b = 0; b < n / 32; b++, x += 32) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int j = 0; j < 32; j++) {
            y[b].qs[j] = (int8_t)lrintf(x[j] * id);
            sum += y[b].qs[j];
        }
        y[b].d = d;
        y[b].s = d * (float)sum;
    }
}

static void quantize_ak(const float *x, act_ak *y, int n) {
    /* like ggml's Q8_K: scale from the signed value of largest magnitude, so it maps to -128 exactly */
    for (int b = 0; b < n / 256; b++, x += 256) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < 256; j++) {
            if (fabsf(x[j]) > amax) { amax = fabsf(x[j]); max = x[j]; }
        }
        if (amax == 0.0f) {
            memset(&y[b], 0, sizeof(act_ak));
            continue;
        }
        const float iscale = -128.0f / max;
        for (int j = 0; j < 256; j++) {
            int v = (int)lrintf(iscale * x[j]);
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
