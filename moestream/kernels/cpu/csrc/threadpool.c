/* Persistent workers sleep on a condition variable until a new job is posted. Job hand-over is race-free by
 * construction: the job (fn, ctx, n_tasks, its task counter) is a struct on the caller's stack, published and
 * withdrawn under the pool lock; a worker takes the pointer under the lock, counts itself inside, runs tasks,
 * and counts itself out under the lock; it never touches the job after that. The caller, having taken tasks
 * itself until none are left, withdraws the job (late wakers skip it) and waits until no worker is inside,
 * so every task has run exactly once and nobody reads the job once pool_run returns (see threadpool.h). */
#include "threadpool.h"

#include <pthread.h>
#include <stdatomic.h>

#define MAX_THREADS 256

typedef struct {
    task_fn fn;
    void *ctx;
    int n_tasks;
    atomic_int next_task;  /* tasks are taken by fetch_add; values >= n_tasks mean "none left" */
} job;

static struct {
    pthread_mutex_t caller;   /* held by pool_run and pool_shutdown throughout: one caller at a time */
    pthread_mutex_t lock;     /* guards every field below */
    pthread_cond_t wake, left;
    pthread_t threads[MAX_THREADS];
    int n_started;
    unsigned long generation; /* bumped per job, so a worker joins each job at most once */
    job *job;                 /* the job on offer; NULL between jobs */
    int n_wanted;             /* workers with index < n_wanted may join it */
    int n_inside;             /* workers that joined the current job and have not left it */
    int shutting_down;
} P = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER };

static void take_tasks(job *j) {
    for (;;) {
        const int t = atomic_fetch_add(&j->next_task, 1);
        if (t < 0 || t >= j->n_tasks) return;  /* t < 0: the counter wrapped past INT_MAX (atomics wrap, no UB) */
        j->fn(j->ctx, t);
    }
}

static void *worker(void *arg) {
    const int index = (int)(size_t)arg;
    unsigned long seen = 0;
    pthread_mutex_lock(&P.lock);
    for (;;) {
        while (P.generation == seen && !P.shutting_down) pthread_cond_wait(&P.wake, &P.lock);
        if (P.shutting_down) break;
        seen = P.generation;
        job *j = P.job;
        if (!j || index >= P.n_wanted) continue;
        P.n_inside++;
        pthread_mutex_unlock(&P.lock);
        take_tasks(j);
        pthread_mutex_lock(&P.lock);
        if (--P.n_inside == 0) pthread_cond_signal(&P.left);  /* only the caller waits on `left` */
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
    job j = { fn, ctx, n_tasks };
    atomic_init(&j.next_task, 0);
    pthread_mutex_lock(&P.caller);
    pthread_mutex_lock(&P.lock);
    ensure_workers(n_threads - 1);
    P.job = &j;
    P.n_wanted = n_threads - 1;
    P.generation++;
    pthread_cond_broadcast(&P.wake);
    pthread_mutex_unlock(&P.lock);
    take_tasks(&j);
    /* every task is taken now: each is done, or running on a worker that is counted inside */
    pthread_mutex_lock(&P.lock);
    P.job = NULL;
    while (P.n_inside > 0) pthread_cond_wait(&P.left, &P.lock);
    pthread_mutex_unlock(&P.lock);
    pthread_mutex_unlock(&P.caller);
}

void pool_shutdown(void) {
    pthread_mutex_lock(&P.caller);
    pthread_mutex_lock(&P.lock);
    P.shutting_down = 1;
    pthread_cond_broadcast(&P.wake);
    pthread_mutex_unlock(&P.lock);
    for (int i = 0; i < P.n_started; i++) pthread_join(P.threads[i], NULL);
    pthread_mutex_lock(&P.lock);
    P.n_started = 0;
    P.shutting_down = 0;
    pthread_mutex_unlock(&P.lock);
    pthread_mutex_unlock(&P.caller);
}
