/* Test driver for the thread pool (threadpool.h): many tiny jobs of varying task counts, every task counting
 * itself, then a check that each ran exactly once. Built into the extension (_native.pool_stress) and, on its
 * own with threadpool.c, under ThreadSanitizer by tests/kernels/test_threadpool.py. */
#include <stdatomic.h>
#include <stdlib.h>

#include "threadpool.h"

typedef struct {
    atomic_int *count;  /* [n_tasks] runs of each task */
    int n_tasks;
    atomic_long out_of_range;
} stress_job;

static void count_task(void *ctx, int t) {
    stress_job *s = ctx;
    if (t < 0 || t >= s->n_tasks) { atomic_fetch_add(&s->out_of_range, 1); return; }
    for (volatile int spin = 0; spin < (t & 7) * 256; spin++) {}  /* uneven task lengths shift the timing */
    atomic_fetch_add(&s->count[t], 1);
}

static long run_one(atomic_int *count, int n, int n_threads) {
    stress_job s = { count, n };
    atomic_init(&s.out_of_range, 0);
    for (int t = 0; t < n; t++) atomic_store(&count[t], 0);
    pool_run(count_task, &s, n, n_threads);
    long bad = atomic_load(&s.out_of_range);
    for (int t = 0; t < n; t++) bad += atomic_load(&count[t]) != 1;
    return bad;
}

long pool_stress(int n_jobs, int max_tasks, int n_threads, unsigned seed) {
    if (max_tasks < 1) max_tasks = 1;
    atomic_int *count = malloc(sizeof *count * (size_t)max_tasks);
    if (!count) return -1;
    long bad = 0;
    for (int i = 0; i < n_jobs; i++) {
        seed = seed * 1103515245u + 12345u;  /* job sizes from a fixed LCG: reruns see the same jobs */
        bad += run_one(count, 1 + (int)((seed >> 8) % (unsigned)max_tasks), n_threads);
    }
    free(count);
    return bad;
}
