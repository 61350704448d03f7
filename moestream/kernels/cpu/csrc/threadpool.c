/* Persistent workers wait on a condition variable for a new job generation, then take tasks from a shared
 * atomic counter. The caller takes tasks too, then waits until every task has finished. */
#include "threadpool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#define MAX_THREADS 256

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake, done;
    pthread_t threads[MAX_THREADS];
    int n_started;
    int n_active;          /* workers taking part in the current job */
    unsigned long generation;
    task_fn fn;
    void *ctx;
    int n_tasks;
    atomic_int next_task;
    atomic_int finished;
    int shutting_down;
} P = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER };

static void take_tasks(void) {
    int t;
    while ((t = atomic_fetch_add(&P.next_task, 1)) < P.n_tasks) {
        P.fn(P.ctx, t);
        atomic_fetch_add(&P.finished, 1);
    }
}

static void *worker(void *arg) {
    int index = (int)(size_t)arg;
    unsigned long seen = 0;
    pthread_mutex_lock(&P.lock);
    for (;;) {
        while (P.generation == seen && !P.shutting_down) pthread_cond_wait(&P.wake, &P.lock);
        if (P.shutting_down) break;
        seen = P.generation;
        if (index >= P.n_active) continue;
        pthread_mutex_unlock(&P.lock);
        take_tasks();
        pthread_mutex_lock(&P.lock);
        pthread_cond_broadcast(&P.done);
    }
    pthread_mutex_unlock(&P.lock);
    return NULL;
}

static void ensure_workers(int n) {
    while (P.n_started < n && P.n_started < MAX_THREADS) {
        if (pthread_create(&P.threads[P.n_started], NULL, worker, (void *)(size_t)P.n_started) != 0) break;
        P.n_started++;
    }
}

void pool_run(task_fn fn, void *ctx, int n_tasks, int n_threads) {
    if (n_tasks <= 0) return;
    if (n_threads <= 1 || n_tasks == 1) {
        for (int t = 0; t < n_tasks; t++) fn(ctx, t);
        return;
    }
    pthread_mutex_lock(&P.lock);
    ensure_workers(n_threads - 1);
    P.fn = fn; P.ctx = ctx; P.n_tasks = n_tasks; P.n_active = n_threads - 1;
    /* finished first: a worker leaving the previous job may take task 0 the moment next_task is reset, and
     * its completion must count for this job (seq_cst stores keep this order) */
    atomic_store(&P.finished, 0);
    atomic_store(&P.next_task, 0);
    P.generation++;
    pthread_cond_broadcast(&P.wake);
    pthread_mutex_unlock(&P.lock);
    take_tasks();
    pthread_mutex_lock(&P.lock);
    while (atomic_load(&P.finished) < n_tasks) pthread_cond_wait(&P.done, &P.lock);
    pthread_mutex_unlock(&P.lock);
}

void pool_shutdown(void) {
    pthread_mutex_lock(&P.lock);
    P.shutting_down = 1;
    pthread_cond_broadcast(&P.wake);
    pthread_mutex_unlock(&P.lock);
    for (int i = 0; i < P.n_started; i++) pthread_join(P.threads[i], NULL);
    P.n_started = 0;
    P.shutting_down = 0;
}
