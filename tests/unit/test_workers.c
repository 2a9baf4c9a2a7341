/* SPDX-License-Identifier: PostgreSQL */
/* Unit tests for workers.c: jobs run off the loop, results come back on it, cancelled ones are dropped. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include <event2/event.h>

#include "workers.h"

struct job {
	int *done_count;
	int *freed_count;
	int value;
	int result;
	int sleep_ms;
};

static void job_run(void *arg)
{
	struct job *j = arg;
	if (j->sleep_ms) {
		struct timespec ts = { 0, (long)j->sleep_ms * 1000000L };
		nanosleep(&ts, NULL);
	}
	j->result = j->value * 2;
}

static int results_sum;

static void job_done(void *arg)
{
	struct job *j = arg;
	(*j->done_count)++;
	results_sum += j->result;
	free(j);
}

static void job_free(void *arg)
{
	struct job *j = arg;
	(*j->freed_count)++;
	free(j);
}

static struct job *new_job(int value, int sleep_ms, int *done, int *freed)
{
	struct job *j = calloc(1, sizeof(*j));
	assert_non_null(j);
	j->value = value;
	j->sleep_ms = sleep_ms;
	j->done_count = done;
	j->freed_count = freed;
	return j;
}

/* Loop until every job was delivered, at most about 10 s. */
static void run_until_idle(struct event_base *base, struct workers *w)
{
	for (int i = 0; i < 1000 && workers_pending(w) > 0; i++) {
		struct timeval tv = { 0, 10000 };
		event_base_loopexit(base, &tv);
		event_base_dispatch(base);
	}
	assert_int_equal(workers_pending(w), 0);
}

static void test_jobs_come_back_on_the_loop(void **state)
{
	(void)state;
	struct event_base *base = event_base_new();
	struct workers *w = workers_new(base);
	assert_non_null(w);
	int done = 0, freed = 0;
	results_sum = 0;
	for (int i = 1; i <= 20; i++)
		assert_non_null(workers_submit(w, job_run, job_done, job_free, new_job(i, 0, &done, &freed)));
	run_until_idle(base, w);
	assert_int_equal(done, 20);
	assert_int_equal(freed, 0);
	assert_int_equal(results_sum, 2 * (20 * 21 / 2));
	workers_free(w);
	event_base_free(base);
}

static void test_cancelled_jobs_are_freed_not_delivered(void **state)
{
	(void)state;
	struct event_base *base = event_base_new();
	struct workers *w = workers_new(base);
	int done = 0, freed = 0;
	struct worker_job *jobs[8];
	/* the first ones are running (sleeping) when cancelled, the later ones still queued */
	for (int i = 0; i < 8; i++)
		jobs[i] = workers_submit(w, job_run, job_done, job_free, new_job(i, 50, &done, &freed));
	struct timespec ts = { 0, 10 * 1000000L };
	nanosleep(&ts, NULL);
	for (int i = 0; i < 8; i += 2)
		workers_cancel(w, jobs[i]);
	run_until_idle(base, w);
	assert_int_equal(done, 4);
	assert_int_equal(freed, 4);
	workers_free(w);
	event_base_free(base);
}

static void test_free_drops_undelivered_jobs(void **state)
{
	(void)state;
	struct event_base *base = event_base_new();
	struct workers *w = workers_new(base);
	int done = 0, freed = 0;
	for (int i = 0; i < 5; i++)
		workers_submit(w, job_run, job_done, job_free, new_job(i, 20, &done, &freed));
	workers_free(w);   /* no loop ran: nothing delivered, everything freed */
	assert_int_equal(done, 0);
	assert_int_equal(freed, 5);
	event_base_free(base);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_jobs_come_back_on_the_loop),
		cmocka_unit_test(test_cancelled_jobs_are_freed_not_delivered),
		cmocka_unit_test(test_free_drops_undelivered_jobs),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
