/* A small persistent pthread pool: run(fn, ctx, n_tasks) executes fn(ctx, task) for every task on up to
 * n_threads threads (the caller is one of them) and returns when all are done. */
#ifndef MOESTREAM_THREADPOOL_H
#define MOESTREAM_THREADPOOL_H

typedef void (*task_fn)(void *ctx, int task);

void pool_run(task_fn fn, void *ctx, int n_tasks, int n_threads);
void pool_shutdown(void);

#endif
