/* SPDX-License-Identifier: PostgreSQL */
/*
 * limits_sync.c - see limits_sync.h. Every query goes through one side
 * channel, in FIFO order, and each step waits for its answer before the
 * next of its kind is queued, so a slow or absent PostgreSQL only delays
 * the sharing, never a client.
 */
#include "ai/limits_sync.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ai/limits.h"
#include "ai/migrate.h"
#include "ai/tags.h"
#include "log.h"
#include "sidechan.h"
#include "sluice.h"
#include "sqltext.h"
#include "util.h"

/* The array parameters of one batch of deltas. */
struct batch {
	struct sqltext subjects, models, days, requests, tokens, cents;
	int n;
};

/* Parallel arrays of rows for one unnest() INSERT: budget alerts or budget states. */
#define ROW_COLS 8
struct rows {
	struct sqltext col[ROW_COLS];
	int n;
};

/* Last batch number applied from one other instance. */
struct peer_seq {
	char *instance;
	long long seq;
};

struct limits_sync {
	struct sluice *sl;
	struct sidechan *sc;
	struct db_target target;
	char instance[160];
	struct event *refresh_ev, *sync_ev;
	bool started;              /* caught up with sluice.rate_counters at least once */
	bool limits_read;          /* sluice.limits read at least once */
	bool seeded;               /* budgets seeded from sluice.llm_usage */
	bool seed_running, positions_running;
	bool refresh_running, sync_running, groups_running;
	long long next_seq;        /* this instance's next batch number */
	struct batch pending;      /* exported, not yet stored */
	long long pending_seq;
	struct peer_seq *peers;
	size_t n_peers;
	struct rows alerts;        /* taken from the limits, not yet stored (retried) */
	bool alerts_running, state_running;
	struct event *lease_ev;    /* every LEASE_TICK_USEC: ask for slices, give back the unspent */
	struct rows asks;          /* the asks in flight: subject, model, dimension, limit, amount */
	int64_t asks_sent_ms;
	bool asks_running, gives_running;
	bool fail_closed;          /* leasing, and ai_database unreachable: logged once each way */
};

/* How often the lease timer looks for asks and gives: the data path never waits for it. */
#define LEASE_TICK_USEC (20 * USEC_PER_MSEC)

static int64_t now_ms(void)
{
	return wall_usec() / 1000;
}

static void batch_free(struct batch *b)
{
	free(b->subjects.s);
	free(b->models.s);
	free(b->days.s);
	free(b->requests.s);
	free(b->tokens.s);
	free(b->cents.s);
	memset(b, 0, sizeof(*b));
}

static void rows_free(struct rows *r)
{
	for (int i = 0; i < ROW_COLS; i++)
		free(r->col[i].s);
	memset(r, 0, sizeof(*r));
}

/* Append one value to column i of r's current row (quoted text, or a number as is). */
static void rows_add(struct rows *r, int i, const char *value, bool quoted)
{
	if (r->n)
		sqltext_str(&r->col[i], ",");
	if (quoted)
		sqltext_quoted(&r->col[i], value);
	else
		sqltext_str(&r->col[i], value);
}

static void rows_add_num(struct rows *r, int i, double v)
{
	char num[64];
	snprintf(num, sizeof(num), "%.6f", v);
	rows_add(r, i, num, false);
}

static void rows_add_ms(struct rows *r, int i, int64_t ms)
{
	char num[32];
	snprintf(num, sizeof(num), "%lld", (long long)ms);
	rows_add(r, i, num, false);
}

/* The columns as array literals in params[0..ncols) (malloc'ed, free with free()); false when out of memory. */
static bool rows_params(const struct rows *r, int ncols, char **params)
{
	bool ok = true;
	for (int i = 0; i < ncols; i++) {
		struct sqltext a = { 0 };
		sqltext_str(&a, "{");
		sqltext_str(&a, r->col[i].s ? r->col[i].s : "");
		sqltext_str(&a, "}");
		ok = ok && !a.failed && !r->col[i].failed;
		params[i] = a.s;
	}
	return ok;
}

static bool query_ok(const PGresult *res, const char *what)
{
	if (!res)
		return false;   /* connection lost: the side channel logged it */
	ExecStatusType st = PQresultStatus(res);
	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
		return true;
	log_warning("limits: %s failed: %s", what, PQresultErrorMessage(res));
	return false;
}

/* ---- sluice.limits ---- */

static int64_t value_or_inherit(const PGresult *res, int row, int col)
{
	return PQgetisnull(res, row, col) ? LIMIT_INHERIT : atoll(PQgetvalue(res, row, col));
}

static void limits_loaded(void *arg, const PGresult *res)
{
	struct limits_sync *ls = arg;
	ls->refresh_running = false;
	if (!query_ok(res, "reading sluice.limits"))
		return;
	struct limit_rules *rules = limits_get_rules(ls->sl->limits);
	limits_clear_overrides(rules);
	ls->limits_read = true;
	for (int i = 0; i < PQntuples(res); i++) {
		struct limit_values v;
		limit_values_init(&v);
		v.requests_per_minute = value_or_inherit(res, i, 2);
		v.tokens_per_minute = value_or_inherit(res, i, 3);
		v.tokens_per_day = value_or_inherit(res, i, 4);
		v.cost_cents_per_month = PQgetisnull(res, i, 5) ? LIMIT_INHERIT : atof(PQgetvalue(res, i, 5));
		v.max_concurrent = value_or_inherit(res, i, 6);
		if (!limits_set_override(rules, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), &v))
			log_warning("limits: sluice.limits row for \"%s\" ignored", PQgetvalue(res, i, 0));
	}
}

static void groups_loaded(void *arg, const PGresult *res)
{
	struct limits_sync *ls = arg;
	ls->groups_running = false;
	if (!query_ok(res, "reading sluice.subject_groups"))
		return;    /* the memberships read last stay */
	limits_clear_groups(ls->sl->limits);
	for (int i = 0; i < PQntuples(res); i++)
		if (!limits_add_group(ls->sl->limits, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1)))
			log_warning("limits: sluice.subject_groups row (\"%s\", \"%s\") ignored: at most %d groups per subject",
			            PQgetvalue(res, i, 0), PQgetvalue(res, i, 1), LIMITS_MAX_GROUPS);
}

static const char GROUPS_SQL[] =
	"SELECT subject, group_name FROM sluice.subject_groups ORDER BY subject, group_name";

static const char LIMITS_SQL[] =
	"SELECT subject, model, requests_per_minute, tokens_per_minute, tokens_per_day, "
	"cost_cents_per_month::float8, max_concurrent FROM sluice.limits "
	"WHERE valid_until IS NULL OR valid_until > now()";

/* Tokens of today and cents of this month per (subject, model), UTC. */
static const char SEED_SQL[] =
	"SELECT subject, coalesce(model, ''), "
	"coalesce(sum(input_tokens + output_tokens) FILTER (WHERE created_at >= "
	"  date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'), 0), "
	"coalesce(sum(cost_cents), 0)::float8 "
	"FROM sluice.llm_usage "
	"WHERE created_at >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' "
	"GROUP BY 1, 2";

static const char POSITIONS_SQL[] = "SELECT instance, max(seq) FROM sluice.rate_counters GROUP BY instance";

static void refresh_limits(struct limits_sync *ls)
{
	if (ls->refresh_running)
		return;
	ls->refresh_running = sidechan_query(ls->sc, LIMITS_SQL, 0, NULL, limits_loaded, ls);
	if (!ls->groups_running)
		ls->groups_running = sidechan_query(ls->sc, GROUPS_SQL, 0, NULL, groups_loaded, ls);
}

/* ---- start: seed budgets, find where the batches stand ---- */

static void seeded(void *arg, const PGresult *res)
{
	struct limits_sync *ls = arg;
	ls->seed_running = false;
	if (ls->seeded || !query_ok(res, "seeding budgets from sluice.llm_usage"))
		return;    /* seeded once only: a second seed would count the month twice */
	ls->seeded = true;
	int64_t now = now_ms();
	for (int i = 0; i < PQntuples(res); i++)
		limits_seed(ls->sl->limits, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
		            atoll(PQgetvalue(res, i, 2)), atof(PQgetvalue(res, i, 3)), now);
	log_info("limits: budgets seeded from sluice.llm_usage (%d subject/model rows)", PQntuples(res));
}

static void set_peer_seq(struct limits_sync *ls, const char *instance, long long seq)
{
	for (size_t i = 0; i < ls->n_peers; i++)
		if (strcmp(ls->peers[i].instance, instance) == 0) {
			if (seq > ls->peers[i].seq)
				ls->peers[i].seq = seq;
			return;
		}
	struct peer_seq *grown = realloc(ls->peers, (ls->n_peers + 1) * sizeof(*grown));
	if (!grown)
		return;
	ls->peers = grown;
	ls->peers[ls->n_peers].instance = strdup(instance);
	ls->peers[ls->n_peers].seq = seq;
	if (ls->peers[ls->n_peers].instance)
		ls->n_peers++;
}

static void positions_read(void *arg, const PGresult *res)
{
	struct limits_sync *ls = arg;
	ls->positions_running = false;
	if (ls->started || !query_ok(res, "reading sluice.rate_counters"))
		return;
	for (int i = 0; i < PQntuples(res); i++) {
		long long seq = atoll(PQgetvalue(res, i, 1));
		if (strcmp(PQgetvalue(res, i, 0), ls->instance) == 0)
			ls->next_seq = seq + 1;    /* a restart continues its numbering */
		else
			set_peer_seq(ls, PQgetvalue(res, i, 0), seq);  /* follow only what comes after start */
	}
	ls->started = true;
}

/* The reads done once at start, until each has worked (a schema migrated late, a lost connection). */
static void start_reads(struct limits_sync *ls)
{
	if (!ls->seeded && !ls->seed_running)
		ls->seed_running = sidechan_query(ls->sc, SEED_SQL, 0, NULL, seeded, ls);
	if (!ls->started && !ls->positions_running)
		ls->positions_running = sidechan_query(ls->sc, POSITIONS_SQL, 0, NULL, positions_read, ls);
}

static void on_state(void *arg, bool up)
{
	struct limits_sync *ls = arg;
	if (!up)
		return;
	refresh_limits(ls);
	start_reads(ls);
}

/*
 * Before pgsluice serves anyone: read sluice.limits, seed the budgets and
 * find where the batches stand, on a blocking connection of its own, so that
 * the first attributed statement already meets every limit and budget. When
 * ai_database cannot be reached, the side channel does it once it can, and
 * attributed statements are refused until then (limits_sync_ready).
 */
static void preload(struct limits_sync *ls)
{
	PGconn *conn = PQconnectdbParams(ls->target.keys, ls->target.values, 0);
	if (!conn || PQstatus(conn) != CONNECTION_OK) {
		char why[256];
		str_copy(why, conn ? PQerrorMessage(conn) : "out of memory", sizeof(why));
		why[strcspn(why, "\n")] = '\0';
		log_warning("limits: could not load limits and budgets from ai_database \"%s\" at start: %s; "
		            "attributed statements are refused until it can be reached", ls->target.entry, why);
		PQfinish(conn);
		return;
	}
	/* a lock held on a sluice table must not hold up the start for long */
	PGresult *res = PQexec(conn, "SET statement_timeout = '5s'");
	PQclear(res);
	res = PQexec(conn, LIMITS_SQL);
	limits_loaded(ls, res);
	PQclear(res);
	res = PQexec(conn, GROUPS_SQL);
	groups_loaded(ls, res);
	PQclear(res);
	res = PQexec(conn, SEED_SQL);
	seeded(ls, res);
	PQclear(res);
	res = PQexec(conn, POSITIONS_SQL);
	positions_read(ls, res);
	PQclear(res);
	PQfinish(conn);
}

/* ---- sharing counters ---- */

static void add_delta(const struct limit_delta *d, void *arg)
{
	struct batch *b = arg;
	char num[64];
	if (!tags_text_is_clean(d->subject, strlen(d->subject)) || !tags_text_is_clean(d->model, strlen(d->model)))
		return;    /* a text column would refuse the whole batch; such names cannot be tagged anyway */
	const char *sep = b->n ? "," : "";
	sqltext_str(&b->subjects, sep);
	sqltext_quoted(&b->subjects, d->subject);
	sqltext_str(&b->models, sep);
	sqltext_quoted(&b->models, d->model);
	time_t day = (time_t)(d->day_start_ms / 1000);
	struct tm tm;
	gmtime_r(&day, &tm);
	strftime(num, sizeof(num), "%Y-%m-%d", &tm);
	sqltext_str(&b->days, sep);
	sqltext_str(&b->days, num);
	snprintf(num, sizeof(num), "%s%lld", sep, (long long)d->requests);
	sqltext_str(&b->requests, num);
	snprintf(num, sizeof(num), "%s%lld", sep, (long long)d->tokens);
	sqltext_str(&b->tokens, num);
	snprintf(num, sizeof(num), "%s%.6f", sep, d->cost_cents);
	sqltext_str(&b->cents, num);
	b->n++;
}

static void others_read(void *arg, const PGresult *res)
{
	struct limits_sync *ls = arg;
	ls->sync_running = false;
	if (!query_ok(res, "reading other instances' counts"))
		return;
	int64_t now = now_ms();
	for (int i = 0; i < PQntuples(res); i++) {
		limits_apply_remote(ls->sl->limits, PQgetvalue(res, i, 2), PQgetvalue(res, i, 3),
		                    atoll(PQgetvalue(res, i, 4)), atoll(PQgetvalue(res, i, 5)),
		                    atoll(PQgetvalue(res, i, 6)), atof(PQgetvalue(res, i, 7)), now);
		set_peer_seq(ls, PQgetvalue(res, i, 0), atoll(PQgetvalue(res, i, 1)));
	}
}

static void read_others(struct limits_sync *ls)
{
	struct sqltext seen = { 0 };
	sqltext_str(&seen, "{");
	for (size_t i = 0; i < ls->n_peers; i++) {
		char num[32];
		if (i)
			sqltext_str(&seen, ",");
		sqltext_quoted(&seen, ls->peers[i].instance);
		snprintf(num, sizeof(num), ":%lld", ls->peers[i].seq);
		sqltext_str(&seen, num);
	}
	sqltext_str(&seen, "}");
	const char *params[2] = { ls->instance, seen.s };
	ls->sync_running = !seen.failed && sidechan_query(ls->sc,
		"SELECT instance, seq, subject, model, "
		"(extract(epoch FROM day::timestamp) * 1000)::bigint, requests, tokens, cost_cents::float8 "
		"FROM sluice.rate_counters "
		"WHERE instance <> $1 AND seq > coalesce(($2::jsonb ->> instance)::bigint, -1) "
		"ORDER BY instance, seq", 2, params, others_read, ls);
	free(seen.s);
}

static void batch_stored(void *arg, const PGresult *res)
{
	struct limits_sync *ls = arg;
	if (!query_ok(res, "storing this instance's counts")) {
		ls->sync_running = false;
		const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
		if (state && (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0)) {
			/* Refused for its data, it would be refused forever and hold up
			 * every later batch: dropped (the other instances miss these
			 * counts; budgets are rebuilt from sluice.llm_usage at start). */
			log_warning("limits: a batch of %d counts was dropped, sharing goes on with the next", ls->pending.n);
			batch_free(&ls->pending);
		}
		return;   /* else kept in pending: the next tick stores it again, same seq */
	}
	batch_free(&ls->pending);
	read_others(ls);
}

static void store_pending(struct limits_sync *ls)
{
	struct batch *b = &ls->pending;
	char seq[32];
	snprintf(seq, sizeof(seq), "%lld", ls->pending_seq);
	struct sqltext arrays[6];
	struct sqltext *parts[6] = { &b->subjects, &b->models, &b->days, &b->requests, &b->tokens, &b->cents };
	const char *params[8] = { ls->instance, seq };
	bool ok = true;
	for (int i = 0; i < 6; i++) {
		memset(&arrays[i], 0, sizeof(arrays[i]));
		sqltext_str(&arrays[i], "{");
		sqltext_str(&arrays[i], parts[i]->s ? parts[i]->s : "");
		sqltext_str(&arrays[i], "}");
		ok = ok && !arrays[i].failed && !parts[i]->failed;
		params[2 + i] = arrays[i].s;
	}
	ls->sync_running = ok && sidechan_query(ls->sc,
		"INSERT INTO sluice.rate_counters (instance, seq, subject, model, day, requests, tokens, cost_cents) "
		"SELECT $1, $2::bigint, s, m, d, r, t, c FROM unnest($3::text[], $4::text[], $5::date[], "
		"$6::bigint[], $7::bigint[], $8::numeric[]) AS u(s, m, d, r, t, c) "
		"ON CONFLICT DO NOTHING", 8, params, batch_stored, ls);
	for (int i = 0; i < 6; i++)
		free(arrays[i].s);
}

/* ---- budget alerts (NOTIFY sluice_budget) and sluice.budget_state ---- */

static void add_alert(const struct limit_alert *a, void *arg)
{
	struct rows *r = arg;
	if (!tags_text_is_clean(a->subject, strlen(a->subject)) || !tags_text_is_clean(a->model, strlen(a->model)))
		return;
	rows_add(r, 0, a->subject, true);
	rows_add(r, 1, a->model, true);
	rows_add(r, 2, limit_dim_name(a->dim), true);
	rows_add_ms(r, 3, a->period_start_ms);
	rows_add_num(r, 4, a->threshold_pct);
	rows_add_num(r, 5, a->used);
	rows_add_num(r, 6, a->limit);
	rows_add_ms(r, 7, a->resets_at_ms);
	r->n++;
}

static void alerts_sent(void *arg, const PGresult *res)
{
	struct limits_sync *ls = arg;
	ls->alerts_running = false;
	if (!query_ok(res, "announcing budget alerts")) {
		const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
		if (state && (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0)) {
			log_warning("limits: %d budget alerts were dropped", ls->alerts.n);
			rows_free(&ls->alerts);
		}
		return;   /* else kept: sent again on the next tick; sluice.budget_alerts keeps it to one */
	}
	rows_free(&ls->alerts);
}

/*
 * The thresholds crossed since the last tick: each is stored in
 * sluice.budget_alerts and, if no instance stored it before in this period,
 * announced with NOTIFY sluice_budget in the same transaction.
 */
static void send_alerts(struct limits_sync *ls)
{
	if (ls->alerts_running)
		return;
	if (ls->alerts.n == 0)
		limits_take_alerts(ls->sl->limits, add_alert, &ls->alerts);
	if (ls->alerts.n == 0)
		return;
	char *params[9] = { 0 };
	bool ok = rows_params(&ls->alerts, 8, params);
	params[8] = ls->instance;
	ls->alerts_running = ok && sidechan_query(ls->sc,
		"WITH a AS (INSERT INTO sluice.budget_alerts (subject, model, dimension, period_start, threshold_pct, "
		"  used, limit_value, resets_at, instance) "
		"  SELECT s, m, d, to_timestamp(p / 1000.0), t, u, l, to_timestamp(r / 1000.0), $9 "
		"  FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::numeric[], $6::numeric[], "
		"  $7::numeric[], $8::bigint[]) AS x(s, m, d, p, t, u, l, r) "
		"  ON CONFLICT DO NOTHING RETURNING *) "
		"SELECT pg_notify('sluice_budget', json_build_object('subject', subject, 'model', nullif(model, ''), "
		"  'dimension', dimension, 'threshold_pct', threshold_pct, 'used', used, 'limit', limit_value, "
		"  'period_start', period_start, 'resets_at', resets_at, 'instance', instance)::text) FROM a",
		9, (const char *const *)params, alerts_sent, ls);
	for (int i = 0; i < 8; i++)
		free(params[i]);
}

static void add_budget(const struct limit_budget *b, void *arg)
{
	struct rows *r = arg;
	if (!tags_text_is_clean(b->subject, strlen(b->subject)) || !tags_text_is_clean(b->model, strlen(b->model)))
		return;
	rows_add(r, 0, b->subject, true);
	rows_add(r, 1, b->model, true);
	rows_add(r, 2, limit_dim_name(b->dim), true);
	rows_add_num(r, 3, b->limit);
	rows_add_num(r, 4, b->used);
	rows_add_num(r, 5, b->reserved);
	rows_add_ms(r, 6, b->resets_at_ms);
	r->n++;
}

static void state_stored(void *arg, const PGresult *res)
{
	struct limits_sync *ls = arg;
	ls->state_running = false;
	query_ok(res, "storing sluice.budget_state");   /* the next change stores it again */
}

/* The budgets that changed since the last tick, upserted into sluice.budget_state. */
static void store_budget_state(struct limits_sync *ls)
{
	if (ls->state_running)
		return;
	struct rows r = { 0 };
	limits_foreach_changed_budget(ls->sl->limits, now_ms(), add_budget, &r);
	if (r.n > 0) {
		char *params[8] = { 0 };
		params[0] = ls->instance;
		bool ok = rows_params(&r, 7, params + 1);
		ls->state_running = ok && sidechan_query(ls->sc,
			"INSERT INTO sluice.budget_state AS b (instance, subject, model, dimension, limit_value, used, "
			"  reserved, resets_at, updated_at) "
			"SELECT $1, s, m, d, l, u, v, to_timestamp(t / 1000.0), now() "
			"FROM unnest($2::text[], $3::text[], $4::text[], $5::numeric[], $6::numeric[], $7::numeric[], "
			"  $8::bigint[]) AS x(s, m, d, l, u, v, t) "
			"ON CONFLICT (instance, subject, model, dimension) DO UPDATE SET limit_value = EXCLUDED.limit_value, "
			"  used = EXCLUDED.used, reserved = EXCLUDED.reserved, resets_at = EXCLUDED.resets_at, updated_at = now()",
			8, (const char *const *)params, state_stored, ls);
		for (int i = 1; i < 8; i++)
			free(params[i]);
	}
	rows_free(&r);
}

/* budget_alert_thresholds into the limits (checked when the configuration was read). */
static void set_thresholds(struct sluice *sl)
{
	double pcts[LIMITS_MAX_THRESHOLDS];
	size_t n = 0;
	char err[256];
	if (!limits_parse_thresholds(sl->cfg->budget_alert_thresholds, pcts, &n, err, sizeof(err)))
		n = 0;
	limits_set_alert_thresholds(sl->limits, pcts, n);
}

static void sync_tick(evutil_socket_t fd, short what, void *arg)
{
	struct limits_sync *ls = arg;
	(void)fd;
	(void)what;
	if (!ls->started || !sidechan_is_up(ls->sc))
		return;
	send_alerts(ls);
	store_budget_state(ls);
	if (ls->sync_running)
		return;
	if (ls->pending.n == 0) {
		limits_export_deltas(ls->sl->limits, add_delta, &ls->pending);
		ls->pending_seq = ls->next_seq;
		if (ls->pending.n > 0)
			ls->next_seq++;
	}
	if (ls->pending.n > 0)
		store_pending(ls);
	else
		read_others(ls);
}

static void pruned(void *arg, const PGresult *res)
{
	(void)arg;
	query_ok(res, "pruning sluice.rate_counters");
}

static void refresh_tick(evutil_socket_t fd, short what, void *arg)
{
	struct limits_sync *ls = arg;
	(void)fd;
	(void)what;
	if (!sidechan_is_up(ls->sc))
		return;
	refresh_limits(ls);
	start_reads(ls);
	limits_expire(ls->sl->limits, now_ms());
	sidechan_query(ls->sc, "DELETE FROM sluice.rate_counters WHERE day < (now() AT TIME ZONE 'UTC')::date - 2",
	               0, NULL, pruned, NULL);
	sidechan_query(ls->sc, "DELETE FROM sluice.budget_state WHERE resets_at < now() - interval '1 day'",
	               0, NULL, pruned, NULL);
}


/* ---- leases (sluice.rate_leases) ---- */

/* Log once when leasing loses ai_database, once when it is back. */
static void set_fail_closed(struct limits_sync *ls, bool failing)
{
	if (failing == ls->fail_closed)
		return;
	ls->fail_closed = failing;
	if (failing)
		log_warning("limits: ai_database \"%s\" unreachable: admitting only from leased allowances (fail closed)",
		            ls->target.entry);
	else
		log_info("limits: ai_database \"%s\" reachable again: leasing resumed", ls->target.entry);
}

static void add_ask(const struct limit_lease *a, void *arg)
{
	struct rows *r = arg;
	rows_add(r, 0, a->subject, true);
	rows_add(r, 1, a->model, true);
	rows_add(r, 2, limit_dim_name(a->dim), true);
	rows_add_ms(r, 3, a->limit);
	rows_add_ms(r, 4, a->amount);
	r->n++;
}

/* Hand the grants in res (NULL: none) to the limits; every ask of the batch left unanswered fails. */
static void asks_done(struct limits_sync *ls, const PGresult *res)
{
	int64_t now = now_ms();
	for (int i = 0; res && i < PQntuples(res); i++) {
		const char *dim = PQgetvalue(res, i, 2);
		limits_lease_granted(ls->sl->limits, PQgetvalue(res, i, 0), PQgetvalue(res, i, 1),
		                     strcmp(dim, "tokens_per_minute") == 0 ? LIMIT_TOKENS_PER_MINUTE
		                                                            : LIMIT_REQUESTS_PER_MINUTE,
		                     atoll(PQgetvalue(res, i, 4)), atoll(PQgetvalue(res, i, 3)), ls->asks_sent_ms, now);
	}
	limits_lease_fail_in_flight(ls->sl->limits, now);
	rows_free(&ls->asks);
}

static void asks_answered(void *arg, const PGresult *res)
{
	struct limits_sync *ls = arg;
	ls->asks_running = false;
	bool ok = query_ok(res, "leasing from sluice.rate_leases");
	set_fail_closed(ls, !ok);
	asks_done(ls, ok ? res : NULL);
}

/*
 * One statement for every slice wanted: each (subject, model, dimension) row
 * of sluice.rate_leases is updated under its row lock, so instances asking
 * together are served one after the other from what is left.
 */
static const char ASK_SQL[] =
	"INSERT INTO sluice.rate_leases AS r (subject, model, dimension, base_sec, slots, limit_value, wanted, granted, updated_at) "
	"SELECT u.s, u.m, u.d, t.new_base, t.new_slots, u.lim, u.want, t.granted, now() "
	"FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[]) AS u(s, m, d, lim, want), "
	"LATERAL sluice.lease_take(NULL, NULL, floor(extract(epoch FROM now()))::bigint, $6::int, u.lim, u.want) AS t "
	"ON CONFLICT (subject, model, dimension) DO UPDATE SET (base_sec, slots, limit_value, wanted, granted, updated_at) = "
	"(SELECT t2.new_base, t2.new_slots, EXCLUDED.limit_value, EXCLUDED.wanted, t2.granted, now() "
	" FROM sluice.lease_take(r.base_sec, r.slots, floor(extract(epoch FROM now()))::bigint, $6::int, "
	"   EXCLUDED.limit_value, EXCLUDED.wanted) AS t2) "
	"RETURNING subject, model, dimension, granted, floor(extract(epoch FROM now()))::bigint";

static void send_asks(struct limits_sync *ls, int64_t now)
{
	if (ls->asks_running)
		return;
	rows_free(&ls->asks);
	if (limits_lease_asks(ls->sl->limits, now, add_ask, &ls->asks) == 0)
		return;
	ls->asks_sent_ms = now;
	char *params[6] = { 0 };
	char span[16];
	snprintf(span, sizeof(span), "%d", LIMITS_LEASE_SPAN_S);
	bool ok = rows_params(&ls->asks, 5, params);
	params[5] = span;
	ls->asks_running = ok && sidechan_query(ls->sc, ASK_SQL, 6, (const char *const *)params, asks_answered, ls);
	for (int i = 0; i < 5; i++)
		free(params[i]);
	if (!ls->asks_running)
		asks_done(ls, NULL);
}

static void add_give(const struct limit_lease *g, void *arg)
{
	struct rows *r = arg;
	rows_add(r, 0, g->subject, true);
	rows_add(r, 1, g->model, true);
	rows_add(r, 2, limit_dim_name(g->dim), true);
	rows_add_ms(r, 3, g->grant_sec);
	rows_add_ms(r, 4, g->amount);
	r->n++;
}

static const char GIVE_SQL[] =
	"UPDATE sluice.rate_leases AS r SET slots = sluice.lease_give(r.base_sec, r.slots, g.secs, g.amounts), "
	"updated_at = now() "
	"FROM (SELECT s, m, d, array_agg(sec) AS secs, array_agg(amount) AS amounts "
	"      FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[]) AS x(s, m, d, sec, amount) "
	"      GROUP BY 1, 2, 3) AS g "
	"WHERE r.subject = g.s AND r.model = g.m AND r.dimension = g.d";

static void gives_stored(void *arg, const PGresult *res)
{
	struct limits_sync *ls = arg;
	ls->gives_running = false;
	query_ok(res, "giving back leased allowances");   /* lost: counted until they age out (the strict side) */
}

/* The unspent part of every slice past its end (all: at shutdown) back to sluice.rate_leases. */
static void send_gives(struct limits_sync *ls, int64_t now, bool all, PGconn *blocking)
{
	struct rows r = { 0 };
	if (limits_lease_gives(ls->sl->limits, now, all, add_give, &r) > 0 && (blocking || !ls->gives_running)) {
		char *params[5] = { 0 };
		if (rows_params(&r, 5, params)) {
			if (blocking) {
				PGresult *res = PQexecParams(blocking, GIVE_SQL, 5, NULL, (const char *const *)params, NULL, NULL, 0);
				query_ok(res, "giving back leased allowances");
				PQclear(res);
			} else {
				ls->gives_running = sidechan_query(ls->sc, GIVE_SQL, 5, (const char *const *)params, gives_stored, ls);
			}
		}
		for (int i = 0; i < 5; i++)
			free(params[i]);
	}
	rows_free(&r);
}

/* Back from fail-closed once a statement works again, whether or not a slice is wanted. */
static void probe_answered(void *arg, const PGresult *res)
{
	struct limits_sync *ls = arg;
	ls->asks_running = false;
	if (res && PQresultStatus(res) == PGRES_TUPLES_OK)
		set_fail_closed(ls, false);
}

static void lease_tick(evutil_socket_t fd, short what, void *arg)
{
	struct limits_sync *ls = arg;
	(void)fd;
	(void)what;
	if (ls->sl->cfg->limits_lease_instances <= 0)
		return;
	int64_t now = now_ms();
	if (!sidechan_is_up(ls->sc)) {
		if (sidechan_is_down(ls->sc))
			set_fail_closed(ls, true);
		/* slices past their end: one give-back waits in the side channel's queue for
		 * PostgreSQL, later ones are dropped (counted until they age out: the strict side) */
		send_gives(ls, now, false, NULL);
		return;
	}
	send_gives(ls, now, false, NULL);
	send_asks(ls, now);
	if (ls->fail_closed && !ls->asks_running)
		ls->asks_running = sidechan_query(ls->sc, "SELECT 1", 0, NULL, probe_answered, ls);
}

bool limits_sync_fail_closed(const struct sluice *sl)
{
	const struct limits_sync *ls = sl->limits_sync;
	return ls && ls->fail_closed;
}

/* ---- life cycle ---- */

bool limits_sync_start(struct sluice *sl)
{
	char err[512];
	if (!sl->cfg->ai_database[0])
		return true;
	struct limits_sync *ls = calloc(1, sizeof(*ls));
	if (!ls)
		return false;
	ls->sl = sl;
	ls->next_seq = 1;
	if (!ai_db_target_resolve(sl->cfg, sl->userlist, "pgsluice-limits", 5, &ls->target, err, sizeof(err))) {
		log_error("limits: %s", err);
		free(ls);
		return false;
	}
	str_copy(ls->instance, sl->instance, sizeof(ls->instance));
	set_thresholds(sl);
	ls->refresh_ev = event_new(sl->base, -1, EV_PERSIST, refresh_tick, ls);
	ls->sync_ev = event_new(sl->base, -1, EV_PERSIST, sync_tick, ls);
	ls->lease_ev = event_new(sl->base, -1, EV_PERSIST, lease_tick, ls);
	limits_set_leasing(sl->limits, sl->cfg->limits_lease_instances);
	ls->sc = sidechan_new(sl->base, "limits", ls->target.keys, ls->target.values, on_state, ls);
	sl->limits_sync = ls;
	if (!ls->refresh_ev || !ls->sync_ev || !ls->lease_ev || !ls->sc || !timer_add_usec(ls->lease_ev, LEASE_TICK_USEC) ||
	    !timer_add_usec(ls->refresh_ev, sl->cfg->limits_refresh_interval) || !timer_add_usec(ls->sync_ev, sl->cfg->limits_sync_interval)) {
		limits_sync_stop(sl);
		return false;
	}
	preload(ls);
	return true;
}

bool limits_sync_ready(const struct sluice *sl)
{
	const struct limits_sync *ls = sl->limits_sync;
	return !ls || (ls->limits_read && ls->seeded && ls->started);
}

bool limits_sync_seeded(const struct sluice *sl)
{
	const struct limits_sync *ls = sl->limits_sync;
	return !ls || ls->seeded;
}

void limits_sync_reconfigure(struct sluice *sl)
{
	struct limits_sync *ls = sl->limits_sync;
	if (!ls)
		return;
	set_thresholds(sl);
	limits_set_leasing(sl->limits, sl->cfg->limits_lease_instances);
	event_del(ls->refresh_ev);
	event_del(ls->sync_ev);
	timer_add_usec(ls->refresh_ev, sl->cfg->limits_refresh_interval);
	timer_add_usec(ls->sync_ev, sl->cfg->limits_sync_interval);
}

void limits_sync_stop(struct sluice *sl)
{
	struct limits_sync *ls = sl->limits_sync;
	if (!ls)
		return;
	sl->limits_sync = NULL;
	if (sl->cfg->limits_lease_instances > 0 && ls->started) {
		/* give back what is held, on a connection of its own (the side channel may be busy) */
		PGconn *conn = PQconnectdbParams(ls->target.keys, ls->target.values, 0);
		if (conn && PQstatus(conn) == CONNECTION_OK) {
			PGresult *res = PQexec(conn, "SET statement_timeout = '2s'");
			PQclear(res);
			send_gives(ls, now_ms(), true, conn);
		}
		PQfinish(conn);
	}
	if (ls->lease_ev)
		event_free(ls->lease_ev);
	if (ls->refresh_ev)
		event_free(ls->refresh_ev);
	if (ls->sync_ev)
		event_free(ls->sync_ev);
	sidechan_free(ls->sc);      /* calls the pending callbacks with NULL */
	batch_free(&ls->pending);
	rows_free(&ls->alerts);
	rows_free(&ls->asks);
	for (size_t i = 0; i < ls->n_peers; i++)
		free(ls->peers[i].instance);
	free(ls->peers);
	free(ls);
}
