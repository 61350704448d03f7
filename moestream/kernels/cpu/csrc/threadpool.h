/* A small persistent pthread pool: pool_run(fn, ctx, n_tasks, n_threads) executes fn(ctx, task) exactly once for
 * every task in [0, n_tasks) on up to n_threads threads (the caller is one of them) and returns when all are done.
 *
 * Rules, and why:
 * - One caller at a time: pool_run holds a caller mutex for the whole job, so two Python threads calling native
 *   kernels at once (they release the GIL) run their jobs one after the other, never interleaved.
 * - A task must not call pool_run itself (it would wait on the caller mutex it is inside: deadlock).
 * - When pool_run returns, no worker is still reading the job or running a task of it: the caller waits until every
 *   worker that joined the job has left it, not merely until the tasks are counted, so `ctx` may live on the
 *   caller's stack and the next job can reuse the pool at once.
 * - pool_shutdown joins the workers (also under the caller mutex); a later pool_run starts them again. */
#ifndef MOESTREAM_THREADPOOL_H
#define MOESTREAM_THREADPOOL_H

typedef void (*task_fn)(void *ctx, int task);

void pool_run(task_fn fn, void *ctx, int n_tasks, int n_threads);
void pool_shutdown(void);

/* Test driver: n_jobs jobs of 1..max_tasks tasks (sizes from `seed`), each task counting itself; returns how many
 * tasks were lost, repeated or out of range over all jobs (0 when the pool is right), -1 if out of memory. */
long pool_stress(int n_jobs, int max_tasks, int n_threads, unsigned seed);

#endif
