/* Portable tier: plain C for every legacy and float type (the compiler vectorises the inner loops). */
#include "kernels.h"

#define H(x) half_to_float(x)

static float dot_q4_0(int n, const void *w, const void *a) {
    const block_q4_0 *x = w; const act_a32 *y = a;
    float sum = 0.0f;
    for (int b = 0; b < n / 32; b++) {
        int acc = 0;
        for (int j = 0; j < 16; j++) {
            acc += ((x[b].qs[j] & 0x0f) - 8) * y[b].qs[j] + ((x[b].qs[j] >> 4) - 8) * y[b].qs[j + 16];
        }
        sum += H(x[b].d) * y[b].d * (float)acc;
    }
    return sum;
}

static float dot_q4_1(int n, const void *w, const void *a) {
    const block_q4_1 *x = w; const act_a32 *y = a;
    float sum = 0.0f;
    for (int b = 0; b < n / 32; b++) {
        int acc = 0;
        for (int j = 0; j < 16; j++) acc += (x[b].qs[j] & 0x0f) * y[b].qs[j] + (x[b].qs[j] >> 4) * y[b].qs[j + 16];
        sum += H(x[b].d) * y[b].d * (float)acc + H(x[b].m) * y[b].s;
    }
    return sum;
}

static inline int q5_bit(const uint8_t qh[4], int j) { return (qh[j >> 3] >> (j & 7)) & 1; }

static float dot_q5_0(int n, const void *w, const void *a) {
    const block_q5_0 *x = w; const act_a32 *y = a;
    float sum = 0.0f;
    for (int b = 0; b < n / 32; b++) {
        int acc = 0;
        for (int j = 0; j < 16; j++) {
            const int lo = ((x[b].qs[j] & 0x0f) | (q5_bit(x[b].qh, j) << 4)) - 16;
            const int hi = ((x[b].qs[j] >> 4) | (q5_bit(x[b].qh, j + 16) << 4)) - 16;
            acc += lo * y[b].qs[j] + hi * y[b].qs[j + 16];
        }
        sum += H(x[b].d) * y[b].d * (float)acc;
    }
    return sum;
}

static float dot_q5_1(int n, const void *w, const void *a) {
    const block_q5_1 *x = w; const act_a32 *y = a;
    float sum = 0.0f;
    for (int b = 0; b < n / 32; b++) {
        int acc = 0;
        for (int j = 0; j < 16; j++) {
            const int lo = (x[b].qs[j] & 0x0f) | (q5_bit(x[b].qh, j) << 4);
            const int hi = (x[b].qs[j] >> 4) | (q5_bit(x[b].qh, j + 16) << 4);
            acc += lo * y[b].qs[j] + hi * y[b].qs[j + 16];
        }
        sum += H(x[b].d) * y[b].d * (float)acc + H(x[b].m) * y[b].s;
    }
    return sum;
}

static float dot_q8_0(int n, const void *w, const void *a) {
    const block_q8_0 *x = w; const act_a32 *y = a;
    float sum = 0.0f;
    for (int b = 0; b < n / 32; b++) {
        int acc = 0;
        for (int j = 0; j < 32; j++) acc += x[b].qs[j] * y[b].qs[j];
        sum += H(x[b].d) * y[b].d * (float)acc;
    }
    return sum;
}

static float dot_f32(int n, const void *w, const void *a) {
    const float *x = w, *y = a;
    float s[8] = {0};
    for (int i = 0; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) s[k] += x[i + k] * y[i + k];
    float sum = 0.0f;
    for (int k = 0; k < 8; k++) sum += s[k];
    for (int i = n & ~7; i < n; i++) sum += x[i] * y[i];
    return sum;
}

static float dot_f16(int n, const void *w, const void *a) {
    const half *x = w; const float *y = a;
    float sum = 0.0f;
    for (int i = 0; i < n; i++) sum += H(x[i]) * y[i];
    return sum;
}

static float dot_bf16(int n, const void *w, const void *a) {
    const uint16_t *x = w; const float *y = a;
    float sum = 0.0f;
    for (int i = 0; i < n; i++) sum += bf16_to_float(x[i]) * y[i];
    return sum;
}

static float dot_mxfp4(int n, const void *w, const void *a) {
    const block_mxfp4 *x = w; const act_a32 *y = a;
    float sum = 0.0f;
    for (int b = 0; b < n / 32; b++) {
        int acc = 0;
        for (int j = 0; j < 16; j++)
            acc += MXFP4_VALUES[x[b].qs[j] & 0x0f] * y[b].qs[j] + MXFP4_VALUES[x[b].qs[j] >> 4] * y[b].qs[j + 16];
        sum += e8m0_half(x[b].e) * y[b].d * (float)acc;
    }
    return sum;
}

static void set(qtype_kernels *t, int type, int block, int size, enum act_kind act, vec_dot_fn fn) {
    t[type] = (qtype_kernels){ block, size, act, fn, "generic", NULL, 1, NULL };
}

void register_generic(qtype_kernels *t) {
    set(t, GT_Q4_0, 32, sizeof(block_q4_0), ACT_A32, dot_q4_0);
    set(t, GT_Q4_1, 32, sizeof(block_q4_1), ACT_A32, dot_q4_1);
    set(t, GT_Q5_0, 32, sizeof(block_q5_0), ACT_A32, dot_q5_0);
    set(t, GT_Q5_1, 32, sizeof(block_q5_1), ACT_A32, dot_q5_1);
    set(t, GT_Q8_0, 32, sizeof(block_q8_0), ACT_A32, dot_q8_0);
    set(t, GT_MXFP4, 32, sizeof(block_mxfp4), ACT_A32, dot_mxfp4);
    set(t, GT_F32, 1, 4, ACT_F32, dot_f32);
    set(t, GT_F16, 1, 2, ACT_F32, dot_f16);
    set(t, GT_BF16, 1, 2, ACT_F32, dot_bf16);
}
