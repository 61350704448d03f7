/* The inner loops of one attention task, compiled once per tier: attention.c includes this file twice, with TIER(name)
 * naming the functions, TARGET their target attribute (empty for the generic tier, AVX2 + FMA for the other) and
 * TIER(dot), TIER(axpy) defined before, so that both inline into the key loops.
 *
 * Per block of keys: the scores of all G query heads of one KV head (each key row is read once, from L1, for the G
 * heads), one online-softmax update per head, then the weighted sum of the value rows (each also read once for G). */

TARGET static void TIER(scores)(const head_block *hb, const float *K, int nb) {
    /* sc[g][r] = scale * q_g . K_r for the G heads, keys [0, nb) of the block */
    for (int r = 0; r < nb; r++) {
        const float *k = K + (size_t)r * hb->dh;
        for (int g = 0; g < hb->g; g++)
            hb->sc[(size_t)g * KEY_BLOCK + r] = TIER(dot)(hb->q + (size_t)g * hb->dh, k, hb->dh) * hb->scale;
    }
}

TARGET static void TIER(weigh)(const head_block *hb, int nb) {
    /* per head: block max, rescale of what the blocks before summed, sc -> exp(sc - max) */
    for (int g = 0; g < hb->g; g++) {
        float *sc = hb->sc + (size_t)g * KEY_BLOCK, *acc = hb->acc + (size_t)g * hb->dh, bm = -INFINITY;
        for (int r = 0; r < nb; r++) bm = sc[r] > bm ? sc[r] : bm;  /* a NaN score still makes the output NaN */
        const float m_new = hb->m[g] > bm ? hb->m[g] : bm, c = expf(hb->m[g] - m_new);  /* 0 for the first block */
        if (c != 1.0f) {
            for (int d = 0; d < hb->dh; d++) acc[d] *= c;
            hb->l[g] *= c;
        }
        float l = 0.0f;
        for (int r = 0; r < nb; r++) l += sc[r] = expf(sc[r] - m_new);
        hb->l[g] += l;
        hb->m[g] = m_new;
    }
}

TARGET static void TIER(accumulate)(const head_block *hb, const float *V, int nb) {
    for (int r = 0; r < nb; r++) {
        const float *v = V + (size_t)r * hb->dh;
        for (int g = 0; g < hb->g; g++)
            TIER(axpy)(hb->sc[(size_t)g * KEY_BLOCK + r], v, hb->acc + (size_t)g * hb->dh, hb->dh);
    }
}

TARGET static void TIER(attend_keys)(const head_block *hb, const float *K, const float *V, int n_keys) {
    for (int b = 0; b < n_keys; b += KEY_BLOCK) {
        const int nb = n_keys - b < KEY_BLOCK ? n_keys - b : KEY_BLOCK;
        TIER(scores)(hb, K + (size_t)b * hb->dh, nb);
        TIER(weigh)(hb, nb);
        TIER(accumulate)(hb, V + (size_t)b * hb->dh, nb);
    }
}
