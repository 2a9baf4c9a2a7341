/* SPDX-License-Identifier: PostgreSQL */
/* janitor.c - see janitor.h. */
#include "janitor.h"

#include <event2/event.h>
#include <stdlib.h>

#include "client.h"
#include "listener.h"
#include "log.h"
#include "pool.h"
#include "sluice.h"
#include "util.h"

static struct event *janitor_ev;

static void expire_logins(struct sluice *sl, usec_t now)
{
	usec_t limit = sl->cfg->client_login_timeout;
	struct client *c, *next;
	if (limit <= 0)
		return;
	TAILQ_FOREACH_SAFE(c, &sl->login_clients, entry, next)
		if (now - c->connect_time >= limit)
			client_fatal(c, SQLSTATE_PROTOCOL_VIOLATION, NULL, NULL, "client_login_timeout (server down?)");
}

/* PgBouncer's stats line: averages per second over the last period. */
static void log_stats(struct sluice *sl, usec_t now)
{
	usec_t period = sl->cfg->stats_period;
	if (period <= 0 || now - sl->stats_last_time < period)
		return;
	double secs = (double)(now - sl->stats_last_time) / (double)USEC_PER_SEC;
	const struct sluice_stats *a = &sl->stats, *b = &sl->stats_last;
	uint64_t xacts = a->xact_count - b->xact_count;
	uint64_t queries = a->query_count - b->query_count;
	if (sl->cfg->log_stats)
		log_info("stats: %.0f xacts/s, %.0f queries/s, in %.0f B/s, out %.0f B/s, avg wait %llu us",
		         (double)xacts / secs, (double)queries / secs,
		         (double)(a->bytes_received - b->bytes_received) / secs,
		         (double)(a->bytes_sent - b->bytes_sent) / secs,
		         (unsigned long long)(xacts ? (a->wait_time_usec - b->wait_time_usec) / xacts : 0));
	sl->stats_last = sl->stats;
	sl->stats_last_time = now;
}

static void janitor_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sluice *sl = arg;
	usec_t now = now_usec();
	(void)fd;
	(void)what;
	expire_logins(sl, now);
	listener_make_room(sl);   /* idle sockets aged, a reload changed max_login_clients */
	pool_janitor(sl);
	log_stats(sl, now);
}

bool janitor_start(struct sluice *sl)
{
	/* Timeouts are checked every 1/3 s, so a timeout of N s fires
	 * within N + 0.34 s, as PgBouncer's. */
	struct timeval tv = { 0, 333333 };
	sl->stats_last_time = now_usec();
	janitor_ev = event_new(sl->base, -1, EV_PERSIST, janitor_cb, sl);
	return janitor_ev && event_add(janitor_ev, &tv) == 0;
}

void janitor_stop(void)
{
	if (janitor_ev)
		event_free(janitor_ev);
	janitor_ev = NULL;
}
