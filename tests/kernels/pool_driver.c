/* ThreadSanitizer driver for the kernel thread pool (built by test_threadpool.py with threadpool.c and
 * pool_stress.c): stress from one caller, then from three callers at once, then again after a shutdown.
 * Prints the number of bad tasks; exits non-zero if any. */
#include <pthread.h>
#include <stdio.h>

#include "threadpool.h"

static long bad[3];

static void *caller(void *arg) {
    const int i = (int)(size_t)arg;
    bad[i] = pool_stress(300, 40, 3 + i, 7u + (unsigned)i);  /* different thread counts per caller */
    return NULL;
}

int main(void) {
    long total = pool_stress(500, 40, 4, 1u);
    pthread_t th[3];
    for (int i = 0; i < 3; i++) pthread_create(&th[i], NULL, caller, (void *)(size_t)i);
    for (int i = 0; i < 3; i++) { pthread_join(th[i], NULL); total += bad[i]; }
    pool_shutdown();
    total += pool_stress(200, 40, 3, 2u);  /* workers start again after a shutdown */
    pool_shutdown();
    printf("bad tasks: %ld\n", total);
    return total != 0;
}
