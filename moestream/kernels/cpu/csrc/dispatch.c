/* One table, ggml type id -> kernels; filled once from the CPU's features: generic, then better tiers
 * overwrite the entries they implement. MOESTREAM_KERNEL_TIER=generic|avx2|avx512 caps the tier (for tests). */
#include <stdlib.h>
#include <string.h>

#include "kernels.h"

static qtype_kernels TABLE[GT_MAX];
static int initialised;

static int tier_allowed(const char *tier) {
    const char *cap = getenv("MOESTREAM_KERNEL_TIER");
    if (!cap || !*cap) return 1;
    if (!strcmp(cap, "generic")) return 0;
    return !strcmp(tier, "avx2") || !strcmp(cap, tier);
}

static int has_avx512_vnni(void) {
#if defined(__x86_64__) || defined(__i386__)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
#else
    return 0;
#endif
}

void kernels_init(void) {
    if (initialised) return;
    register_generic(TABLE);
    register_kquants_generic(TABLE);
    register_packed_generic(TABLE);
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && tier_allowed("avx2")) {
        register_avx2(TABLE);
        register_kquants_avx2(TABLE);
        register_packed_avx2(TABLE);
        if (has_avx512_vnni() && tier_allowed("avx512")) register_avx512(TABLE);
    }
#endif
    initialised = 1;
}

const qtype_kernels *kernels_for(int type) {
    if (type < 0 || type >= GT_MAX || !(TABLE[type].dot || TABLE[type].gemv8)) return NULL;
    return &TABLE[type];
}
