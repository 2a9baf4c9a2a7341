/* SPDX-License-Identifier: PostgreSQL */
/*
 * workers.h - a small pool of threads for CPU-bound work that must not stall
 * the event loop (SCRAM's PBKDF2). Owns the threads, the job queue and the
 * pipe that hands finished jobs back to the loop; jobs touch no loop state.
 */
#ifndef SLUICE_WORKERS_H
#define SLUICE_WORKERS_H

#include <stdbool.h>

struct event_base;
struct workers;
struct worker_job;

/* Threads a pool starts (lazily, at its first job). */
#define WORKERS_THREADS 2

/*
 * A pool whose finished jobs are delivered on base's loop. No thread runs
 * until the first workers_submit (so a daemon may fork before). Returns
 * NULL when out of memory or the pipe cannot be made.
 */
struct workers *workers_new(struct event_base *base);

/*
 * Stop the threads (a job running is waited for) and free the pool; jobs not
 * delivered yet are dropped as if cancelled (their free_arg runs). Safe on
 * NULL. Call from the loop's thread, with no loop callback running.
 */
void workers_free(struct workers *w);

/*
 * Queue run(arg) for a worker thread. run must touch nothing but arg. Once
 * it returned, done(arg) is called on the loop's thread, unless the job was
 * cancelled first: then free_arg(arg) is called instead (it may be NULL
 * when arg needs no freeing). arg is the job's from here: done or free_arg
 * frees it, never the caller. The handle returned stays valid until done
 * runs or workers_cancel is called, and not longer. Returns NULL (free_arg
 * already called) when out of memory or no thread can be started.
 */
struct worker_job *workers_submit(struct workers *w, void (*run)(void *arg), void (*done)(void *arg),
                                  void (*free_arg)(void *arg), void *arg);

/*
 * The owner of job is going away: done will not be called; free_arg(arg)
 * is, on the loop's thread, at once when the job had not started, else
 * once it finished. Call from the loop's thread only, once, before done.
 */
void workers_cancel(struct workers *w, struct worker_job *job);

/* Jobs queued or running (not delivered yet); for SHOW and tests. */
int workers_pending(struct workers *w);

#endif
