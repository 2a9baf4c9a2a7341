/* SPDX-License-Identifier: PostgreSQL */
/*
 * workers.c - see workers.h. The threads share nothing with the loop but
 * the two job lists under one mutex; finished jobs wake the loop through a
 * non-blocking pipe, so libevent is only ever called from the loop's thread.
 */
#include "workers.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"

struct worker_job {
	TAILQ_ENTRY(worker_job) entry;
	void (*run)(void *);
	void (*done)(void *);
	void (*free_arg)(void *);
	void *arg;
	bool started;     /* a thread took it from the queue */
	bool cancelled;   /* its owner went away: free_arg instead of done */
};

TAILQ_HEAD(job_list, worker_job);

struct workers {
	struct event_base *base;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct job_list queue;      /* waiting for a thread */
	struct job_list finished;   /* run, waiting for the loop */
	int pending;                /* queued, running or finished, not delivered */
	bool stopping;
	int nthreads;
	pthread_t threads[WORKERS_THREADS];
	int pipefd[2];              /* a worker writes a byte when it finished a job */
	struct event *wake;
};

static void drop(struct worker_job *job)
{
	if (job->free_arg)
		job->free_arg(job->arg);
	free(job);
}

static void *worker_main(void *p)
{
	struct workers *w = p;
	pthread_mutex_lock(&w->mu);
	for (;;) {
		while (!w->stopping && TAILQ_EMPTY(&w->queue))
			pthread_cond_wait(&w->cv, &w->mu);
		if (w->stopping)
			break;
		struct worker_job *job = TAILQ_FIRST(&w->queue);
		TAILQ_REMOVE(&w->queue, job, entry);
		job->started = true;
		bool cancelled = job->cancelled;
		pthread_mutex_unlock(&w->mu);
		if (!cancelled)
			job->run(job->arg);
		pthread_mutex_lock(&w->mu);
		TAILQ_INSERT_TAIL(&w->finished, job, entry);
		pthread_mutex_unlock(&w->mu);
		/* Full pipe: the loop has a wake-up pending already and takes every finished job. */
		ssize_t n;
		do
			n = write(w->pipefd[1], "", 1);
		while (n < 0 && errno == EINTR);
		pthread_mutex_lock(&w->mu);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

/* Loop side: hand every finished job to its owner. */
static void on_wake(evutil_socket_t fd, short what, void *p)
{
	struct workers *w = p;
	char buf[64];
	(void)what;
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	struct job_list mine = TAILQ_HEAD_INITIALIZER(mine);
	pthread_mutex_lock(&w->mu);
	TAILQ_CONCAT(&mine, &w->finished, entry);
	pthread_mutex_unlock(&w->mu);
	struct worker_job *job;
	while ((job = TAILQ_FIRST(&mine)) != NULL) {
		TAILQ_REMOVE(&mine, job, entry);
		w->pending--;
		/* a done callback before this one may have cancelled it */
		if (job->cancelled) {
			drop(job);
		} else {
			job->done(job->arg);
			free(job);
		}
	}
}

struct workers *workers_new(struct event_base *base)
{
	struct workers *w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	w->base = base;
	w->pipefd[0] = w->pipefd[1] = -1;
	TAILQ_INIT(&w->queue);
	TAILQ_INIT(&w->finished);
	if (pthread_mutex_init(&w->mu, NULL) != 0) {
		free(w);
		return NULL;
	}
	pthread_cond_init(&w->cv, NULL);
	if (pipe2(w->pipefd, O_NONBLOCK | O_CLOEXEC) != 0 ||
	    !(w->wake = event_new(base, w->pipefd[0], EV_READ | EV_PERSIST, on_wake, w)) ||
	    event_add(w->wake, NULL) != 0) {
		workers_free(w);
		return NULL;
	}
	return w;
}

/* Start the threads with every signal blocked: signals stay the loop's. */
static bool start_threads(struct workers *w)
{
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	while (w->nthreads < WORKERS_THREADS) {
		int rc = pthread_create(&w->threads[w->nthreads], NULL, worker_main, w);
		if (rc != 0) {
			log_warning("could not start a worker thread: %s", strerror(rc));
			break;
		}
		w->nthreads++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return w->nthreads > 0;
}

void workers_free(struct workers *w)
{
	if (!w)
		return;
	pthread_mutex_lock(&w->mu);
	w->stopping = true;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
	for (int i = 0; i < w->nthreads; i++)
		pthread_join(w->threads[i], NULL);
	struct worker_job *job;
	while ((job = TAILQ_FIRST(&w->queue)) != NULL) {
		TAILQ_REMOVE(&w->queue, job, entry);
		drop(job);
	}
	while ((job = TAILQ_FIRST(&w->finished)) != NULL) {
		TAILQ_REMOVE(&w->finished, job, entry);
		drop(job);
	}
	if (w->wake)
		event_free(w->wake);
	if (w->pipefd[0] >= 0)
		close(w->pipefd[0]);
	if (w->pipefd[1] >= 0)
		close(w->pipefd[1]);
	pthread_cond_destroy(&w->cv);
	pthread_mutex_destroy(&w->mu);
	free(w);
}

struct worker_job *workers_submit(struct workers *w, void (*run)(void *arg), void (*done)(void *arg),
                                  void (*free_arg)(void *arg), void *arg)
{
	struct worker_job *job = calloc(1, sizeof(*job));
	if (!job || (w->nthreads == 0 && !start_threads(w))) {
		free(job);
		if (free_arg)
			free_arg(arg);
		return NULL;
	}
	job->run = run;
	job->done = done;
	job->free_arg = free_arg;
	job->arg = arg;
	pthread_mutex_lock(&w->mu);
	TAILQ_INSERT_TAIL(&w->queue, job, entry);
	w->pending++;
	pthread_cond_signal(&w->cv);
	pthread_mutex_unlock(&w->mu);
	return job;
}

void workers_cancel(struct workers *w, struct worker_job *job)
{
	pthread_mutex_lock(&w->mu);
	bool queued = !job->started;
	if (queued) {
		TAILQ_REMOVE(&w->queue, job, entry);
		w->pending--;
	} else {
		job->cancelled = true;   /* the thread or on_wake drops it */
	}
	pthread_mutex_unlock(&w->mu);
	if (queued)
		drop(job);
}

int workers_pending(struct workers *w)
{
	pthread_mutex_lock(&w->mu);
	int n = w->pending;
	pthread_mutex_unlock(&w->mu);
	return n;
}
