/* Native attention step for decode (see attention.c): one call per layer for every short segment of a step. */
#ifndef MOESTREAM_ATTENTION_H
#define MOESTREAM_ATTENTION_H
#include <stdint.h>

#define ATTN_MAX_SEGMENT_TOKENS 16 /* longer segments (prefill chunks) take the PyTorch path */

enum { QK_NORM_NONE = 0, QK_NORM_HEAD = 1, QK_NORM_FULL = 2 };

typedef struct {
    int type;           /* ggml type id; any type of the kernel table */
    const uint8_t *w;   /* [rows, cols] in that type */
    int rows, cols;
    const float *bias;  /* [rows] or NULL */
} attn_proj;

/* One layer's fixed arguments, checked once by attn_layer_check (the Python side keeps every buffer alive). */
typedef struct {
    int d_model, n_heads, n_kv_heads, head_dim, rope_dim, rope_neox, qk_norm;
    float eps, q_eps, k_eps;          /* attn_norm's, q_norm's and k_norm's */
    const float *norm;                /* attn_norm weight [d_model] */
    const float *q_norm, *k_norm;     /* [head_dim] each (QK_NORM_HEAD), [n_heads * head_dim] and
                                         [n_kv_heads * head_dim] (QK_NORM_FULL), or NULL (QK_NORM_NONE) */
    const float *inv_freq;            /* [rope_dim / 2]: RoPE angle of position p, pair i = (float)p * inv_freq[i] */
    attn_proj q, k, v, o;             /* [H*Dh, D], [KVH*Dh, D], [KVH*Dh, D], [D, H*Dh] */
} attn_layer;

/* Rows [start, start + length) of x belong to one sequence; its cache of this layer holds n_cached tokens. */
typedef struct {
    float *k, *v;              /* [n_kv_heads, capacity, head_dim]; this step writes rows n_cached .. +length-1 */
    int capacity, n_cached;
    int start, length;
    const int64_t *positions;  /* [length] absolute positions; the token at p sees keys 0..p of the cache */
} attn_segment;

/* 0 ok, -1 a projection type without a kernel, -4 inconsistent sizes or a missing buffer */
int attn_layer_check(const attn_layer *L);

/* out[T, D] = x + o(attention(q, k, v of rms_norm(x))); segments cover x's rows in order. 0 ok, -2 out of memory,
 * -4 refused segments (not covering 0..T-1 in order, length outside 1..ATTN_MAX_SEGMENT_TOKENS, no room in the
 * cache, a negative position, one cache in two segments). out may be x itself. */
int attn_step(const attn_layer *L, const float *x, int n_tokens, const attn_segment *segs, int n_segs, float *out,
              int n_threads);
#endif
