/* SPDX-License-Identifier: PostgreSQL */
/*
 * sidechan.c - see sidechan.h. libpq's asynchronous API
 * (libpq-async.html): PQconnectStartParams/PQconnectPoll to connect,
 * PQsendQueryParams + PQflush to send, PQconsumeInput/PQisBusy/PQgetResult
 * to read, each step waiting on the socket in the event loop.
 */
#include "sidechan.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

#define SIDECHAN_MAX_QUEUED 10000
#define BACKOFF_MIN_MS 500
#define BACKOFF_MAX_MS 30000

enum sidechan_state { SC_DOWN, SC_CONNECTING, SC_IDLE, SC_BUSY };

struct sc_query {
	struct sc_query *next;
	char *sql;
	int n_params;
	char **params;
	int *lengths, *formats;    /* NULL: text parameters */
	bool borrowed;             /* params[i] are the caller's: not freed */
	sidechan_result_fn fn;
	void *arg;
};

struct sidechan {
	struct event_base *base;
	char *name;
	char **keywords, **values;
	sidechan_state_fn state_fn;
	sidechan_notify_fn notify_fn;  /* NULL: notifications are dropped */
	void *notify_arg;
	void *state_arg;
	enum sidechan_state state;
	PGconn *conn;
	struct event *io;          /* on the socket, flags as libpq asks */
	struct event *retry;       /* reconnect timer */
	int backoff_ms;
	struct sc_query *head, *tail;
	int n_queued;
	PGresult *last;            /* result of the running query so far */
	bool want_write;           /* PQflush has more to send */
	bool fail_fast;            /* a failed connection fails the queued queries too */
	char last_error[256];      /* why the connection last failed or broke */
};

static void sc_connect(struct sidechan *sc);
static void sc_io_cb(evutil_socket_t fd, short what, void *arg);

static char **copy_strv(const char *const *v)
{
	int n = 0;
	while (v[n])
		n++;
	char **out = calloc((size_t)n + 1, sizeof(char *));
	for (int i = 0; out && i < n; i++)
		if (!(out[i] = strdup(v[i]))) {
			for (int j = 0; j < i; j++)
				free(out[j]);
			free(out);
			return NULL;
		}
	return out;
}

static void free_strv(char **v, int n)
{
	for (int i = 0; v && (n < 0 ? v[i] != NULL : i < n); i++)
		free(v[i]);
	free(v);
}

static void free_query(struct sc_query *q)
{
	free(q->sql);
	if (q->borrowed)
		free(q->params);
	else
		free_strv(q->params, q->n_params);
	free(q->lengths);
	free(q->formats);
	free(q);
}

/* Watch the socket for what libpq waits on; the socket may change while connecting. */
static void sc_watch(struct sidechan *sc, short what)
{
	if (sc->io)
		event_free(sc->io);
	sc->io = NULL;
	int fd = PQsocket(sc->conn);
	if (fd < 0)
		return;
	sc->io = event_new(sc->base, fd, what | EV_PERSIST, sc_io_cb, sc);
	if (sc->io)
		event_add(sc->io, NULL);
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	sc_connect(arg);
}

/* The connection failed or broke: fail the running query, retry later. */
static void sc_lost(struct sidechan *sc, const char *why)
{
	bool was_up = sc->state == SC_IDLE || sc->state == SC_BUSY;
	log_warning("%s: connection to PostgreSQL %s: %s", sc->name, was_up ? "lost" : "failed",
	            why && *why ? why : "unknown error");
	snprintf(sc->last_error, sizeof(sc->last_error), "%s", why && *why ? why : "unknown error");
	size_t n = strlen(sc->last_error);
	while (n > 0 && (sc->last_error[n - 1] == '\n' || sc->last_error[n - 1] == ' '))
		sc->last_error[--n] = '\0';   /* libpq ends its messages with a newline */
	if (sc->io)
		event_free(sc->io);
	sc->io = NULL;
	if (sc->conn)
		PQfinish(sc->conn);
	sc->conn = NULL;
	PQclear(sc->last);
	sc->last = NULL;
	if (sc->state == SC_BUSY && sc->head) {
		/* The running query's outcome is unknown: its owner decides (e.g. the
		 * usage writer retries, relying on idempotent ids). */
		struct sc_query *q = sc->head;
		sc->head = q->next;
		if (!sc->head)
			sc->tail = NULL;
		sc->n_queued--;
		q->fn(q->arg, NULL);
		free_query(q);
	}
	sc->state = SC_DOWN;
	if (sc->fail_fast) {
		/* Waiting for the next attempt would hold the queries' owners for
		 * up to the backoff: answer them now. */
		struct sc_query *q = sc->head;
		sc->head = sc->tail = NULL;
		sc->n_queued = 0;
		while (q) {
			struct sc_query *next = q->next;
			q->fn(q->arg, NULL);
			free_query(q);
			q = next;
		}
	}
	if (was_up && sc->state_fn)
		sc->state_fn(sc->state_arg, false);
	struct timeval tv = { sc->backoff_ms / 1000, (sc->backoff_ms % 1000) * 1000 };
	evtimer_add(sc->retry, &tv);
	sc->backoff_ms = sc->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : sc->backoff_ms * 2;
}

static void sc_start_next(struct sidechan *sc)
{
	struct sc_query *q = sc->head;
	if (!q || sc->state != SC_IDLE)
		return;
	if (!PQsendQueryParams(sc->conn, q->sql, q->n_params, NULL, (const char *const *)q->params,
	                       q->lengths, q->formats, 0)) {
		sc->state = SC_BUSY;
		sc_lost(sc, PQerrorMessage(sc->conn));
		return;
	}
	sc->state = SC_BUSY;
	int rc = PQflush(sc->conn);
	sc->want_write = rc == 1;
	if (rc < 0)
		sc_lost(sc, PQerrorMessage(sc->conn));
	else
		sc_watch(sc, sc->want_write ? EV_READ | EV_WRITE : EV_READ);
}

static void sc_finish_query(struct sidechan *sc)
{
	struct sc_query *q = sc->head;
	sc->head = q->next;
	if (!sc->head)
		sc->tail = NULL;
	sc->n_queued--;
	sc->state = SC_IDLE;
	PGresult *res = sc->last;
	sc->last = NULL;
	q->fn(q->arg, res);
	PQclear(res);
	free_query(q);
	sc_start_next(sc);
}

/* Hand each notification that arrived to notify_fn, or drop it. */
static void drain_notifies(struct sidechan *sc)
{
	PGnotify *n;
	while (sc->conn && (n = PQnotifies(sc->conn)) != NULL) {
		if (sc->notify_fn)
			sc->notify_fn(sc->notify_arg, n);
		PQfreemem(n);
	}
}

void sidechan_set_notify(struct sidechan *sc, sidechan_notify_fn fn, void *arg)
{
	sc->notify_fn = fn;
	sc->notify_arg = arg;
}

/* Read what arrived; keep the last result, preferring an error. */
static void sc_read(struct sidechan *sc)
{
	if (!PQconsumeInput(sc->conn)) {
		sc_lost(sc, PQerrorMessage(sc->conn));
		return;
	}
	drain_notifies(sc);
	while (sc->state == SC_BUSY && !PQisBusy(sc->conn)) {
		PGresult *res = PQgetResult(sc->conn);
		if (!res) {
			/* a notification read with the query's last reply is in libpq's
			 * buffer now, and no read event will come for it */
			drain_notifies(sc);
			sc_finish_query(sc);
			return;
		}
		if (sc->last && PQresultStatus(sc->last) == PGRES_FATAL_ERROR)
			PQclear(res);
		else {
			PQclear(sc->last);
			sc->last = res;
		}
	}
}

static void sc_poll_connect(struct sidechan *sc)
{
	switch (PQconnectPoll(sc->conn)) {
	case PGRES_POLLING_READING:
		sc_watch(sc, EV_READ);
		return;
	case PGRES_POLLING_WRITING:
		sc_watch(sc, EV_WRITE);
		return;
	case PGRES_POLLING_OK:
		if (PQsetnonblocking(sc->conn, 1) != 0) {
			sc_lost(sc, PQerrorMessage(sc->conn));
			return;
		}
		log_info("%s: connected to PostgreSQL", sc->name);
		sc->state = SC_IDLE;
		sc->backoff_ms = BACKOFF_MIN_MS;
		sc_watch(sc, EV_READ);
		if (sc->state_fn)
			sc->state_fn(sc->state_arg, true);
		sc_start_next(sc);
		return;
	default:
		sc_lost(sc, PQerrorMessage(sc->conn));
		return;
	}
}

static void sc_io_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sidechan *sc = arg;
	(void)fd;
	if (sc->state == SC_CONNECTING) {
		sc_poll_connect(sc);
		return;
	}
	if ((what & EV_WRITE) && sc->want_write) {
		int rc = PQflush(sc->conn);
		if (rc < 0) {
			sc_lost(sc, PQerrorMessage(sc->conn));
			return;
		}
		sc->want_write = rc == 1;
		if (!sc->want_write)
			sc_watch(sc, EV_READ);
	}
	if (what & EV_READ) {
		if (sc->state == SC_IDLE) {
			/* Idle input is a notice or the server going away. */
			if (!PQconsumeInput(sc->conn) || PQstatus(sc->conn) == CONNECTION_BAD) {
				sc_lost(sc, PQerrorMessage(sc->conn));
				return;
			}
			drain_notifies(sc);
			return;
		}
		sc_read(sc);
	}
}

static void sc_connect(struct sidechan *sc)
{
	sc->conn = PQconnectStartParams((const char *const *)sc->keywords,
	                                (const char *const *)sc->values, 0);
	sc->state = SC_CONNECTING;
	if (!sc->conn || PQstatus(sc->conn) == CONNECTION_BAD) {
		sc_lost(sc, sc->conn ? PQerrorMessage(sc->conn) : "out of memory");
		return;
	}
	sc_watch(sc, EV_WRITE);
}

struct sidechan *sidechan_new(struct event_base *base, const char *name,
                              const char *const *keywords, const char *const *values,
                              sidechan_state_fn state_fn, void *state_arg)
{
	struct sidechan *sc = calloc(1, sizeof(*sc));
	if (!sc)
		return NULL;
	sc->base = base;
	sc->name = strdup(name);
	sc->keywords = copy_strv(keywords);
	sc->values = copy_strv(values);
	sc->retry = evtimer_new(base, retry_cb, sc);
	sc->state_fn = state_fn;
	sc->state_arg = state_arg;
	sc->backoff_ms = BACKOFF_MIN_MS;
	if (!sc->name || !sc->keywords || !sc->values || !sc->retry) {
		sidechan_free(sc);
		return NULL;
	}
	sc_connect(sc);
	return sc;
}

bool sidechan_query(struct sidechan *sc, const char *sql, int n_params, const char *const *params,
                    sidechan_result_fn fn, void *arg)
{
	return sidechan_query_params(sc, sql, n_params, params, NULL, NULL, false, fn, arg);
}

bool sidechan_query_params(struct sidechan *sc, const char *sql, int n_params,
                           const char *const *params, const int *lengths, const int *formats,
                           bool borrow, sidechan_result_fn fn, void *arg)
{
	if (sc->n_queued >= SIDECHAN_MAX_QUEUED)
		return false;
	struct sc_query *q = calloc(1, sizeof(*q));
	if (!q)
		return false;
	q->sql = strdup(sql);
	q->n_params = n_params;
	q->params = n_params > 0 ? calloc((size_t)n_params, sizeof(char *)) : NULL;
	q->fn = fn;
	q->arg = arg;
	bool ok = q->sql && (n_params == 0 || q->params);
	if (ok && formats && n_params > 0) {
		q->lengths = calloc((size_t)n_params, sizeof(int));
		q->formats = calloc((size_t)n_params, sizeof(int));
		ok = q->lengths && q->formats;
	}
	q->borrowed = borrow;
	for (int i = 0; ok && i < n_params; i++) {
		if (!params[i])
			continue;
		if (q->formats) {
			q->formats[i] = formats[i];
			q->lengths[i] = lengths ? lengths[i] : 0;
		}
		if (borrow) {
			q->params[i] = (char *)params[i];    /* the caller's until fn; never written */
		} else if (q->formats && formats[i] == 1) {
			size_t n = lengths[i] > 0 ? (size_t)lengths[i] : 0;
			q->params[i] = malloc(n ? n : 1);
			if (q->params[i])
				memcpy(q->params[i], params[i], n);
		} else {
			q->params[i] = strdup(params[i]);
		}
		if (!q->params[i])
			ok = false;
	}
	if (!ok) {
		free_query(q);
		return false;
	}
	if (sc->tail)
		sc->tail->next = q;
	else
		sc->head = q;
	sc->tail = q;
	sc->n_queued++;
	sc_start_next(sc);
	return true;
}

void sidechan_set_fail_fast(struct sidechan *sc, bool on)
{
	sc->fail_fast = on;
}

bool sidechan_is_down(const struct sidechan *sc)
{
	return sc->state == SC_DOWN;
}

const char *sidechan_last_error(const struct sidechan *sc)
{
	return sc->last_error;
}

bool sidechan_is_up(const struct sidechan *sc)
{
	return sc->state == SC_IDLE || sc->state == SC_BUSY;
}

int sidechan_pending(const struct sidechan *sc)
{
	return sc->n_queued;
}

void sidechan_free(struct sidechan *sc)
{
	if (!sc)
		return;
	if (sc->io)
		event_free(sc->io);
	if (sc->retry)
		event_free(sc->retry);
	if (sc->conn)
		PQfinish(sc->conn);
	PQclear(sc->last);
	struct sc_query *q;
	while ((q = sc->head) != NULL) {
		sc->head = q->next;
		q->fn(q->arg, NULL);
		free_query(q);
	}
	free_strv(sc->keywords, -1);
	free_strv(sc->values, -1);
	free(sc->name);
	free(sc);
}
