/* SPDX-License-Identifier: PostgreSQL */
/*
 * metrics.c - see metrics.h. The data path only increments counters; this
 * file sums them when someone asks (SHOW STATS, a scrape), so a scrape costs
 * O(pools + subjects) in the loop and nothing in between. The AI
 * middleware's counters are its own (ai/stats.h): read here, never pushed.
 */
#include "metrics.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ai/cache.h"
#include "ai/limits.h"
#include "ai/limits_sync.h"
#include "ai/stats.h"
#include "autoconfig.h"
#include "client.h"
#include "log.h"
#include "server.h"
#include "sluice.h"
#include "util.h"

/* Distinct model labels in /metrics; further models are summed as "(other)". */
#define MAX_MODEL_LABELS 100

struct metrics {
	struct sluice *sl;
	struct evhttp *http;                /* NULL: metrics_listen_addr is empty */
	struct event *stats_ev;             /* rolls the stats_period snapshots */
	usec_t newer_time, older_time;      /* monotonic times of the two snapshots */
};

/* ---- per-database sums and averages ---- */

static void stats_add(struct pool_stats *sum, const struct pool_stats *s)
{
	sum->server_assignments += s->server_assignments;
	sum->xact_count += s->xact_count;
	sum->query_count += s->query_count;
	sum->parse_count += s->parse_count;
	sum->bind_count += s->bind_count;
	sum->bytes_received += s->bytes_received;
	sum->bytes_sent += s->bytes_sent;
	sum->xact_time_usec += s->xact_time_usec;
	sum->query_time_usec += s->query_time_usec;
	sum->wait_time_usec += s->wait_time_usec;
	for (int i = 0; i < POOL_WAIT_BUCKETS; i++)
		sum->wait_buckets[i] += s->wait_buckets[i];
}

static uint64_t per_second(uint64_t newer, uint64_t older, usec_t period)
{
	return newer > older ? (uint64_t)((double)(newer - older) * USEC_PER_SEC / (double)period) : 0;
}

static uint64_t per_event(uint64_t time_newer, uint64_t time_older, uint64_t n_newer, uint64_t n_older)
{
	return n_newer > n_older && time_newer > time_older ? (time_newer - time_older) / (n_newer - n_older) : 0;
}

/* PgBouncer's averages: rates per second, durations per event, over the last stats_period. */
static void stats_average(struct pool_stats *avg, const struct pool_stats *newer,
                          const struct pool_stats *older, usec_t period)
{
	memset(avg, 0, sizeof(*avg));
	if (period <= 0)
		return;
	avg->server_assignments = per_second(newer->server_assignments, older->server_assignments, period);
	avg->xact_count = per_second(newer->xact_count, older->xact_count, period);
	avg->query_count = per_second(newer->query_count, older->query_count, period);
	avg->parse_count = per_second(newer->parse_count, older->parse_count, period);
	avg->bind_count = per_second(newer->bind_count, older->bind_count, period);
	avg->bytes_received = per_second(newer->bytes_received, older->bytes_received, period);
	avg->bytes_sent = per_second(newer->bytes_sent, older->bytes_sent, period);
	avg->xact_time_usec = per_event(newer->xact_time_usec, older->xact_time_usec,
	                                newer->xact_count, older->xact_count);
	avg->query_time_usec = per_event(newer->query_time_usec, older->query_time_usec,
	                                 newer->query_count, older->query_count);
	avg->wait_time_usec = per_event(newer->wait_time_usec, older->wait_time_usec,
	                                newer->server_assignments, older->server_assignments);
}

void metrics_foreach_database(struct sluice *sl, metrics_db_fn fn, void *arg)
{
	struct pool *p, *q;
	usec_t period = sl->metrics ? sl->metrics->newer_time - sl->metrics->older_time : 0;
	TAILQ_FOREACH(p, &sl->pools, entry) {
		bool seen = false;
		for (q = TAILQ_FIRST(&sl->pools); q != p && !seen; q = TAILQ_NEXT(q, entry))
			seen = strcmp(q->db_name, p->db_name) == 0;
		if (seen)
			continue;
		struct pool_stats total, newer, older, avg;
		memset(&total, 0, sizeof(total));
		memset(&newer, 0, sizeof(newer));
		memset(&older, 0, sizeof(older));
		for (q = p; q; q = TAILQ_NEXT(q, entry)) {
			if (strcmp(q->db_name, p->db_name) != 0)
				continue;
			stats_add(&total, &q->stats);
			stats_add(&newer, &q->stats_newer);
			stats_add(&older, &q->stats_older);
		}
		stats_average(&avg, &newer, &older, period);
		fn(p->db_name, &total, &avg, arg);
	}
}

/* Every stats_period: the snapshots the averages are computed from. */
static void stats_tick(evutil_socket_t fd, short what, void *arg)
{
	struct metrics *m = arg;
	struct sluice *sl = m->sl;
	struct pool *p;
	(void)fd;
	(void)what;
	TAILQ_FOREACH(p, &sl->pools, entry) {
		p->stats_older = p->stats_newer;
		p->stats_newer = p->stats;
	}
	m->older_time = m->newer_time;
	m->newer_time = now_usec();
	usec_t period = sl->cfg->stats_period;   /* reloadable: read at every tick */
	struct timeval tv = { (time_t)(period / USEC_PER_SEC), (suseconds_t)(period % USEC_PER_SEC) };
	event_add(m->stats_ev, &tv);
}

/* ---- Prometheus text exposition (format 0.0.4) ---- */

/* label="value" pairs of one sample, escaped as the format requires. */
struct labels {
	char text[1024];
	size_t len;
};

static void labels_init(struct labels *l)
{
	l->text[0] = '\0';
	l->len = 0;
}

static void labels_add(struct labels *l, const char *name, const char *value)
{
	char *out = l->text + l->len;
	size_t room = sizeof(l->text) - l->len;
	int n = snprintf(out, room, "%s%s=\"", l->len ? "," : "", name);
	if (n < 0 || (size_t)n >= room)
		return;
	size_t pos = (size_t)n;
	for (const char *v = value ? value : ""; *v && pos + 3 < room; v++) {
		if (*v == '\\' || *v == '"') {
			out[pos++] = '\\';
			out[pos++] = *v;
		} else if (*v == '\n') {
			out[pos++] = '\\';
			out[pos++] = 'n';
		} else {
			out[pos++] = *v;
		}
	}
	if (pos + 2 > room)
		return;
	out[pos++] = '"';
	out[pos] = '\0';
	l->len += pos;
}

static void family(struct evbuffer *out, const char *name, const char *type, const char *help)
{
	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void sample_u(struct evbuffer *out, const char *name, const struct labels *l, uint64_t v)
{
	if (l && l->len)
		evbuffer_add_printf(out, "%s{%s} %llu\n", name, l->text, (unsigned long long)v);
	else
		evbuffer_add_printf(out, "%s %llu\n", name, (unsigned long long)v);
}

static void sample_f(struct evbuffer *out, const char *name, const struct labels *l, double v)
{
	if (l && l->len)
		evbuffer_add_printf(out, "%s{%s} %.6f\n", name, l->text, v);
	else
		evbuffer_add_printf(out, "%s %.6f\n", name, v);
}

static struct labels pool_labels(const struct pool *p)
{
	struct labels l;
	labels_init(&l);
	labels_add(&l, "database", p->db_name);
	labels_add(&l, "user", p->user_name);
	return l;
}

static void render_process(struct sluice *sl, struct evbuffer *out)
{
	struct labels l;
	labels_init(&l);
	labels_add(&l, "version", PACKAGE_VERSION);
	family(out, "pgsluice_info", "gauge", "pgsluice's version; always 1.");
	sample_u(out, "pgsluice_info", &l, 1);
	family(out, "pgsluice_start_time_seconds", "gauge", "When pgsluice started, seconds since the Unix epoch.");
	sample_f(out, "pgsluice_start_time_seconds", NULL, (double)sl->start_time / USEC_PER_SEC);
	family(out, "pgsluice_paused", "gauge", "1 while PAUSE (or KILL, SIGUSR1) holds every database.");
	sample_u(out, "pgsluice_paused", NULL, sl->paused ? 1 : 0);
	family(out, "pgsluice_max_client_connections", "gauge", "max_client_conn.");
	sample_u(out, "pgsluice_max_client_connections", NULL, (uint64_t)sl->cfg->max_client_conn);

	uint64_t login = 0, admin = 0, active = 0, waiting = 0;
	struct client *c;
	struct pool *p;
	TAILQ_FOREACH(c, &sl->login_clients, entry)
		login++;
	TAILQ_FOREACH(c, &sl->admin_clients, entry)
		admin++;
	TAILQ_FOREACH(p, &sl->pools, entry) {
		active += (uint64_t)p->n_clients;
		waiting += (uint64_t)p->n_waiting;
	}
	family(out, "pgsluice_client_connections", "gauge",
	       "Client connections by state: login (authenticating), active, waiting (for a server), admin (console).");
	const char *states[] = { "login", "active", "waiting", "admin" };
	const uint64_t counts[] = { login, active, waiting, admin };
	for (int i = 0; i < 4; i++) {
		labels_init(&l);
		labels_add(&l, "state", states[i]);
		sample_u(out, "pgsluice_client_connections", &l, counts[i]);
	}
}

/* Idle servers that need server_check_query before reuse: PgBouncer's "used". */
static void render_pools(struct sluice *sl, struct evbuffer *out)
{
	usec_t now = now_usec();
	struct pool *p;
	struct labels l;

	family(out, "pgsluice_pool_clients", "gauge",
	       "Client connections of a pool: active (logged in, with or without a server), waiting (for a server).");
	TAILQ_FOREACH(p, &sl->pools, entry) {
		l = pool_labels(p);
		labels_add(&l, "state", "active");
		sample_u(out, "pgsluice_pool_clients", &l, (uint64_t)p->n_clients);
		l = pool_labels(p);
		labels_add(&l, "state", "waiting");
		sample_u(out, "pgsluice_pool_clients", &l, (uint64_t)p->n_waiting);
	}
	family(out, "pgsluice_pool_servers", "gauge",
	       "Server connections of a pool: active (linked to a client), idle, used (idle, due for server_check_query), "
	       "tested (running server_reset_query), login (connecting).");
	TAILQ_FOREACH(p, &sl->pools, entry) {
		int used = pool_count_used(p, now), tested = 0;
		const struct server *s;
		TAILQ_FOREACH(s, &p->active_servers, entry)
			tested += s->state == SV_RESET;
		const char *names[] = { "active", "idle", "used", "tested", "login" };
		const int values[] = { p->n_active - tested, p->n_idle - used, used, tested, p->n_login };
		for (int i = 0; i < 5; i++) {
			l = pool_labels(p);
			labels_add(&l, "state", names[i]);
			sample_u(out, "pgsluice_pool_servers", &l, (uint64_t)values[i]);
		}
	}
	family(out, "pgsluice_pool_max_wait_seconds", "gauge", "How long the oldest waiting client of a pool has waited.");
	TAILQ_FOREACH(p, &sl->pools, entry) {
		const struct client *first = TAILQ_FIRST(&p->waiting_clients);
		l = pool_labels(p);
		sample_f(out, "pgsluice_pool_max_wait_seconds", &l,
		         first ? (double)(now - first->wait_start) / USEC_PER_SEC : 0.0);
	}
	family(out, "pgsluice_pool_size", "gauge", "Most server connections of a pool (pool_size), without the reserve.");
	TAILQ_FOREACH(p, &sl->pools, entry) {
		l = pool_labels(p);
		sample_u(out, "pgsluice_pool_size", &l, (uint64_t)p->pool_size);
	}
	family(out, "pgsluice_pool_paused", "gauge", "1 while PAUSE or KILL holds the pool's database.");
	TAILQ_FOREACH(p, &sl->pools, entry) {
		l = pool_labels(p);
		sample_u(out, "pgsluice_pool_paused", &l, pool_is_paused(p) ? 1 : 0);
	}
}

/* The per-database counters, one family at a time: collected first. */
struct db_totals {
	const char *database;
	struct pool_stats total;
};

struct db_collect {
	struct db_totals *rows;
	size_t n, cap;
	bool failed;
};

static void collect_db(const char *database, const struct pool_stats *total, const struct pool_stats *avg,
                       void *arg)
{
	struct db_collect *dc = arg;
	(void)avg;
	if (dc->n == dc->cap) {
		size_t cap = dc->cap ? dc->cap * 2 : 16;
		struct db_totals *rows = realloc(dc->rows, cap * sizeof(*rows));
		if (!rows) {
			dc->failed = true;
			return;
		}
		dc->rows = rows;
		dc->cap = cap;
	}
	dc->rows[dc->n].database = database;
	dc->rows[dc->n++].total = *total;
}

static void render_databases(struct sluice *sl, struct evbuffer *out)
{
	struct db_collect dc = { 0 };
	metrics_foreach_database(sl, collect_db, &dc);
	static const struct {
		const char *name;
		const char *help;
		size_t offset;
		bool usec;
	} counters[] = {
		{ "pgsluice_server_assignments_total", "Times a server connection was linked to a client.",
		  offsetof(struct pool_stats, server_assignments), false },
		{ "pgsluice_transactions_total", "Transactions pooled (ReadyForQuery outside a transaction relayed).",
		  offsetof(struct pool_stats, xact_count), false },
		{ "pgsluice_queries_total", "Queries pooled (Query, FunctionCall and Execute messages).",
		  offsetof(struct pool_stats, query_count), false },
		{ "pgsluice_client_parses_total", "Parse messages of clients.", offsetof(struct pool_stats, parse_count), false },
		{ "pgsluice_client_binds_total", "Bind messages of clients.", offsetof(struct pool_stats, bind_count), false },
		{ "pgsluice_received_bytes_total", "Bytes received from clients and relayed to servers.",
		  offsetof(struct pool_stats, bytes_received), false },
		{ "pgsluice_sent_bytes_total", "Bytes relayed from servers to clients.",
		  offsetof(struct pool_stats, bytes_sent), false },
		{ "pgsluice_transaction_seconds_total", "Time spent in transactions on server connections.",
		  offsetof(struct pool_stats, xact_time_usec), true },
		{ "pgsluice_query_seconds_total", "Time server connections spent answering requests.",
		  offsetof(struct pool_stats, query_time_usec), true },
	};
	struct labels l;
	for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]); i++) {
		family(out, counters[i].name, "counter", counters[i].help);
		for (size_t r = 0; r < dc.n; r++) {
			uint64_t v = *(const uint64_t *)((const char *)&dc.rows[r].total + counters[i].offset);
			labels_init(&l);
			labels_add(&l, "database", dc.rows[r].database);
			if (counters[i].usec)
				sample_f(out, counters[i].name, &l, (double)v / USEC_PER_SEC);
			else
				sample_u(out, counters[i].name, &l, v);
		}
	}
	family(out, "pgsluice_client_wait_seconds", "histogram",
	       "How long clients waited for a server connection, per assignment.");
	for (size_t r = 0; r < dc.n; r++) {
		const struct pool_stats *t = &dc.rows[r].total;
		uint64_t cumulative = 0;
		for (int b = 0; b < POOL_WAIT_BUCKETS; b++) {
			char le[32];
			cumulative += t->wait_buckets[b];
			if (b < POOL_WAIT_BUCKETS - 1)
				snprintf(le, sizeof(le), "%g", (double)pool_wait_bucket_bounds[b] / USEC_PER_SEC);
			else
				snprintf(le, sizeof(le), "+Inf");
			labels_init(&l);
			labels_add(&l, "database", dc.rows[r].database);
			labels_add(&l, "le", le);
			sample_u(out, "pgsluice_client_wait_seconds_bucket", &l, cumulative);
		}
		labels_init(&l);
		labels_add(&l, "database", dc.rows[r].database);
		sample_f(out, "pgsluice_client_wait_seconds_sum", &l, (double)t->wait_time_usec / USEC_PER_SEC);
		sample_u(out, "pgsluice_client_wait_seconds_count", &l, cumulative);
	}
	free(dc.rows);
}

/* Sums of the AI counters per model label. */
struct model_sum {
	const char *model;
	uint64_t requests, refusals, input_tokens, output_tokens;
	double cost_cents;
};

struct model_sums {
	struct model_sum sums[MAX_MODEL_LABELS + 1];
	size_t n;
};

/* Add e to its model's sum; past MAX_MODEL_LABELS models, to sums[MAX_MODEL_LABELS] ("(other)"). */
static void add_model_sum(const struct ai_usage_row *e, void *arg)
{
	struct model_sums *ms = arg;
	struct model_sum *sums = ms->sums;
	size_t *n = &ms->n;
	if (!e->requests && !e->refusals && !e->input_tokens && !e->output_tokens && e->cost_cents <= 0)
		return;
	size_t k = 0;
	while (k < *n && strcmp(sums[k].model, e->model) != 0)
		k++;
	if (k == *n) {
		if (*n == MAX_MODEL_LABELS) {
			k = MAX_MODEL_LABELS;
			sums[k].model = "(other)";
		} else {
			sums[(*n)++].model = e->model;
		}
	}
	sums[k].requests += e->requests;
	sums[k].refusals += e->refusals;
	sums[k].input_tokens += e->input_tokens;
	sums[k].output_tokens += e->output_tokens;
	sums[k].cost_cents += e->cost_cents;
}

static void render_ai(struct sluice *sl, struct evbuffer *out)
{
	struct ai_stats_totals totals;
	struct labels l;
	ai_stats_totals(sl->ai_stats, &totals);
	family(out, "pgsluice_ai_refusals_total", "counter",
	       "Attributed statements the AI middleware refused, by reason (a limit, or an untrusted ai_user).");
	for (int r = 0; r < N_REFUSAL_REASONS; r++) {
		labels_init(&l);
		labels_add(&l, "reason", refusal_reason_name((enum refusal_reason)r));
		sample_u(out, "pgsluice_ai_refusals_total", &l, totals.refusals[r]);
	}

	struct model_sums *ms = calloc(1, sizeof(*ms));
	if (!ms)
		return;
	ai_stats_foreach(sl->ai_stats, add_model_sum, ms);
	struct model_sum *sums = ms->sums;
	size_t n = ms->n;
	if (sums[MAX_MODEL_LABELS].model)
		sums[n++] = sums[MAX_MODEL_LABELS];
	family(out, "pgsluice_ai_statements_total", "counter",
	       "Attributed statements the AI middleware admitted, by model (\"\" = none named).");
	for (size_t k = 0; k < n; k++) {
		labels_init(&l);
		labels_add(&l, "model", sums[k].model);
		sample_u(out, "pgsluice_ai_statements_total", &l, sums[k].requests);
	}
	family(out, "pgsluice_ai_tokens_total", "counter",
	       "Tokens of usage records, by model and direction (input, output).");
	for (size_t k = 0; k < n; k++) {
		labels_init(&l);
		labels_add(&l, "model", sums[k].model);
		labels_add(&l, "direction", "input");
		sample_u(out, "pgsluice_ai_tokens_total", &l, sums[k].input_tokens);
		labels_init(&l);
		labels_add(&l, "model", sums[k].model);
		labels_add(&l, "direction", "output");
		sample_u(out, "pgsluice_ai_tokens_total", &l, sums[k].output_tokens);
	}
	family(out, "pgsluice_ai_cost_cents_total", "counter", "Cost of usage records in US cents, by model.");
	for (size_t k = 0; k < n; k++) {
		labels_init(&l);
		labels_add(&l, "model", sums[k].model);
		sample_f(out, "pgsluice_ai_cost_cents_total", &l, sums[k].cost_cents);
	}
	family(out, "pgsluice_ai_usage_journal_records", "gauge",
	       "Usage records in the journal not yet stored in PostgreSQL (0 until the usage recorder reports it).");
	sample_u(out, "pgsluice_ai_usage_journal_records", NULL, 0);
	family(out, "pgsluice_ai_usage_rejected_total", "counter",
	       "Usage records PostgreSQL refused to store, moved to sluice.usage_rejects.");
	sample_u(out, "pgsluice_ai_usage_rejected_total", NULL, totals.usage_rejected);
	family(out, "pgsluice_notifications_dropped_total", "counter",
	       "Notifications dropped for clients that did not read them (notify_queue_size).");
	sample_u(out, "pgsluice_notifications_dropped_total", NULL, sl->notify_dropped);
	free(ms);

	struct cache_stats cs = sl->cache ? cache_stats(sl->cache) : (struct cache_stats){ 0 };
	family(out, "pgsluice_ai_cache_entries", "gauge", "Entries in the completion cache.");
	sample_u(out, "pgsluice_ai_cache_entries", NULL, cs.entries);
	family(out, "pgsluice_ai_cache_bytes", "gauge", "Memory held by the completion cache.");
	sample_u(out, "pgsluice_ai_cache_bytes", NULL, cs.bytes);
	family(out, "pgsluice_ai_cache_hits_total", "counter", "Statements answered from the completion cache.");
	sample_u(out, "pgsluice_ai_cache_hits_total", NULL, cs.hits);
	family(out, "pgsluice_ai_cache_misses_total", "counter", "Cache lookups that went to PostgreSQL.");
	sample_u(out, "pgsluice_ai_cache_misses_total", NULL, cs.misses);
	family(out, "pgsluice_ai_cache_evictions_total", "counter", "Entries evicted to stay within cache_max_memory.");
	sample_u(out, "pgsluice_ai_cache_evictions_total", NULL, cs.evictions);

	struct limits_stats ls;
	memset(&ls, 0, sizeof(ls));
	if (sl->limits)
		limits_get_stats(sl->limits, &ls);
	family(out, "pgsluice_ai_limit_counters", "gauge", "(subject, model) rate-limit counters in memory.");
	sample_u(out, "pgsluice_ai_limit_counters", NULL, (uint64_t)ls.entries);
	family(out, "pgsluice_ai_limit_counters_evicted_total", "counter",
	       "Rate-limit counters freed: idle (nothing to remember) or full (at the entry bound, use forgotten).");
	labels_init(&l);
	labels_add(&l, "kind", "idle");
	sample_u(out, "pgsluice_ai_limit_counters_evicted_total", &l, ls.evicted_idle);
	labels_init(&l);
	labels_add(&l, "kind", "full");
	sample_u(out, "pgsluice_ai_limit_counters_evicted_total", &l, ls.evicted_full);

	int64_t held_requests = 0, held_tokens = 0;
	if (sl->limits)
		limits_lease_held(sl->limits, wall_usec() / 1000, &held_requests, &held_tokens);
	family(out, "pgsluice_ai_limit_leased", "gauge",
	       "Requests and tokens held in leased slices of per-minute limits (limits_lease_instances).");
	labels_init(&l);
	labels_add(&l, "dimension", "requests_per_minute");
	sample_u(out, "pgsluice_ai_limit_leased", &l, (uint64_t)held_requests);
	labels_init(&l);
	labels_add(&l, "dimension", "tokens_per_minute");
	sample_u(out, "pgsluice_ai_limit_leased", &l, (uint64_t)held_tokens);
	family(out, "pgsluice_ai_limit_leases_fail_closed", "gauge",
	       "1 while leasing cannot reach ai_database: per-minute limits admit only from slices already held.");
	sample_u(out, "pgsluice_ai_limit_leases_fail_closed", NULL, limits_sync_fail_closed(sl) ? 1 : 0);
}

bool metrics_render(struct sluice *sl, struct evbuffer *out)
{
	if (!sl->metrics)
		return false;
	render_process(sl, out);
	render_pools(sl, out);
	render_databases(sl, out);
	render_ai(sl, out);
	return true;
}

/* ---- HTTP ---- */

static void metrics_request_cb(struct evhttp_request *req, void *arg)
{
	struct sluice *sl = arg;
	struct evbuffer *body = evbuffer_new();
	if (!body || !metrics_render(sl, body)) {
		evhttp_send_error(req, HTTP_INTERNAL, "out of memory");
		if (body)
			evbuffer_free(body);
		return;
	}
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	                  "text/plain; version=0.0.4; charset=utf-8");
	evhttp_send_reply(req, HTTP_OK, "OK", body);
	evbuffer_free(body);
}

static void other_request_cb(struct evhttp_request *req, void *arg)
{
	(void)arg;
	struct evbuffer *body = evbuffer_new();
	if (body)
		evbuffer_add_printf(body, "pgsluice serves Prometheus metrics at /metrics\n");
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain; charset=utf-8");
	evhttp_send_reply(req, HTTP_NOTFOUND, "Not Found", body);
	if (body)
		evbuffer_free(body);
}

static bool start_http(struct metrics *m, char *errbuf, size_t errlen)
{
	const struct sluice_config *cfg = m->sl->cfg;
	const char *addr = strcmp(cfg->metrics_listen_addr, "*") == 0 ? "0.0.0.0" : cfg->metrics_listen_addr;
	m->http = evhttp_new(m->sl->base);
	if (!m->http) {
		snprintf(errbuf, errlen, "could not create the metrics HTTP server");
		return false;
	}
	evhttp_set_allowed_methods(m->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
	evhttp_set_timeout(m->http, 10);            /* a stalled scraper is dropped */
	evhttp_set_max_headers_size(m->http, 8192);
	evhttp_set_max_body_size(m->http, 0);
	evhttp_set_cb(m->http, "/metrics", metrics_request_cb, m->sl);
	evhttp_set_gencb(m->http, other_request_cb, m->sl);
	if (!evhttp_bind_socket_with_handle(m->http, addr, (ev_uint16_t)cfg->metrics_listen_port)) {
		snprintf(errbuf, errlen, "could not listen for metrics on %s:%d", cfg->metrics_listen_addr,
		         cfg->metrics_listen_port);
		return false;
	}
	log_info("serving metrics on http://%s:%d/metrics", cfg->metrics_listen_addr, cfg->metrics_listen_port);
	return true;
}

bool metrics_start(struct sluice *sl, char *errbuf, size_t errlen)
{
	struct metrics *m = calloc(1, sizeof(*m));
	if (!m) {
		snprintf(errbuf, errlen, "out of memory");
		return false;
	}
	m->sl = sl;
	m->newer_time = m->older_time = now_usec();
	sl->metrics = m;
	m->stats_ev = evtimer_new(sl->base, stats_tick, m);
	usec_t period = sl->cfg->stats_period;
	struct timeval tv = { (time_t)(period / USEC_PER_SEC), (suseconds_t)(period % USEC_PER_SEC) };
	if (!m->stats_ev || event_add(m->stats_ev, &tv) != 0) {
		snprintf(errbuf, errlen, "out of memory");
		return false;
	}
	if (sl->cfg->metrics_listen_addr[0] && !start_http(m, errbuf, errlen))
		return false;
	return true;
}

void metrics_stop(struct sluice *sl)
{
	struct metrics *m = sl->metrics;
	if (!m)
		return;
	if (m->http)
		evhttp_free(m->http);
	if (m->stats_ev)
		event_free(m->stats_ev);
	free(m);
	sl->metrics = NULL;
}
