/* SPDX-License-Identifier: PostgreSQL */
/*
 * admin.c - see admin.h. One command per simple Query: a small lexer splits
 * it into words, a table names each command, its privilege and its handler.
 * Handlers write the whole answer (RowDescription, DataRows,
 * CommandComplete, or an ErrorResponse) into a msgbuf; ReadyForQuery
 * follows, except for PAUSE, SUSPEND and WAIT_CLOSE, which answer from the wait
 * timer once their condition holds. Column names and meanings are
 * PgBouncer's where the concept is the same (its doc/usage.md), and so
 * are the types: text (OID 25), int4 (23) where PgBouncer sends int4, int8
 * (20) where it sends int8, numeric (1700) for SHOW STATS and TOTALS
 * counters (as PgBouncer) and for fractional numbers.
 */
#include "admin.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <event2/event.h>
#include <netdb.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ai/cache.h"
#include "ai/stats.h"
#include "ai/limits.h"
#include "auth.h"
#include "autoconfig.h"
#include "client.h"
#include "config.h"
#include "dnscache.h"
#include "ident.h"
#include "listener.h"
#include "relay.h"
#include "log.h"
#include "metrics.h"
#include "pool.h"
#include "proto.h"
#include "server.h"
#include "sluice.h"
#include "util.h"
#include "varcache.h"

/* A console query longer than this is refused (SET values are short). */
#define MAX_ADMIN_QUERY 65536
/* How often waiting PAUSE / WAIT_CLOSE commands look at the servers. */
#define WAIT_CHECK_USEC (50 * USEC_PER_MSEC)

#define TYPE_TEXT    25
#define TYPE_INT8    20
#define TYPE_INT4    23
#define TYPE_BYTEA   17
#define TYPE_NUMERIC 1700

#define SQLSTATE_SYNTAX_ERROR           "42601"
#define SQLSTATE_CANT_CHANGE_RUNTIME    "55P02"
#define SQLSTATE_SUCCESSFUL_COMPLETION  "00000"

/* A command that answers later: PAUSE until the servers closed, WAIT_CLOSE until none needs to,
 * SUSPEND until every socket's output is flushed. */
enum wait_kind { WAIT_PAUSE, WAIT_CLOSE, WAIT_SUSPEND };

struct admin_wait {
	struct client *c;
	enum wait_kind kind;
	char *db;                 /* NULL: every database */
	usec_t since;             /* monotonic: when the command began (suspend_timeout) */
};

struct admin {
	struct sluice *sl;
	struct event *timer;
	struct admin_wait *waits;
	size_t n_waits, cap_waits;
};

/* ---- answers ---- */

struct column {
	const char *name;
	int type;
};

/* A result set under construction in m: RowDescription, then rows of ncols values. */
struct result {
	struct msgbuf *m;
	int ncols;
};

static void result_begin(struct result *r, struct msgbuf *m, const struct column *cols, int ncols)
{
	r->m = m;
	r->ncols = ncols;
	msg_begin(m, PqMsg_RowDescription);
	msg_add_int16(m, (int16_t)ncols);
	for (int i = 0; i < ncols; i++) {
		msg_add_string(m, cols[i].name);
		msg_add_int32(m, 0);       /* table OID */
		msg_add_int16(m, 0);       /* column number */
		msg_add_int32(m, cols[i].type);
		msg_add_int16(m, (int16_t)(cols[i].type == TYPE_INT8 ? 8 : cols[i].type == TYPE_INT4 ? 4 : -1));
		msg_add_int32(m, -1);      /* type modifier */
		msg_add_int16(m, 0);       /* text format */
	}
	msg_end(m);
}

static void row_begin(struct result *r)
{
	msg_begin(r->m, PqMsg_DataRow);
	msg_add_int16(r->m, (int16_t)r->ncols);
}

static void row_end(struct result *r)
{
	msg_end(r->m);
}

/* A text value; NULL is SQL NULL. */
static void put_text(struct result *r, const char *s)
{
	if (!s) {
		msg_add_int32(r->m, -1);
		return;
	}
	size_t n = strlen(s);
	msg_add_int32(r->m, (int32_t)n);
	msg_add_bytes(r->m, s, n);
}

static void put_int(struct result *r, int64_t v)
{
	char buf[32];
	snprintf(buf, sizeof(buf), "%lld", (long long)v);
	put_text(r, buf);
}

static void put_uint(struct result *r, uint64_t v)
{
	char buf[32];
	snprintf(buf, sizeof(buf), "%llu", (unsigned long long)v);
	put_text(r, buf);
}

/* A fractional number: integers without a fraction, others with up to 4 decimals. */
static void put_number(struct result *r, double v)
{
	char buf[64];
	if (v == (double)(int64_t)v)
		snprintf(buf, sizeof(buf), "%lld", (long long)v);
	else
		snprintf(buf, sizeof(buf), "%.4f", v);
	put_text(r, buf);
}

static void command_complete(struct msgbuf *m, const char *tag)
{
	msg_begin(m, PqMsg_CommandComplete);
	msg_add_string(m, tag);
	msg_end(m);
}

__attribute__((format(printf, 5, 6)))
static void admin_error(struct msgbuf *m, const char *sqlstate, const char *detail, const char *hint,
                        const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	msg_add_errorv(m, PqMsg_ErrorResponse, "ERROR", sqlstate, detail, hint, fmt, ap);
	va_end(ap);
}

/* Send what m holds to c, then ReadyForQuery when ready. */
static void send_answer(struct client *c, struct msgbuf *m, bool ready)
{
	if (ready)
		msg_add_ready(m, 'I');
	if (m->failed) {
		msg_free(m);
		msg_init(m);
		admin_error(m, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "out of memory");
		if (ready)
			msg_add_ready(m, 'I');
	}
	msg_flush_to(m, &c->io.out);
}

/* Monotonic time t as wall-clock text, "2026-11-21 10:00:00 UTC" (PgBouncer's timestamps). */
static const char *format_time(usec_t t, char *buf, size_t len)
{
	if (t <= 0)
		return NULL;
	time_t secs = (time_t)((wall_usec() - (now_usec() - t)) / USEC_PER_SEC);
	struct tm tm;
	gmtime_r(&secs, &tm);
	strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm);
	return buf;
}

static const char *format_wall_ms(int64_t ms, char *buf, size_t len)
{
	if (ms < 0)
		return NULL;
	time_t secs = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&secs, &tm);
	size_t n = strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm);
	snprintf(buf + n, len - n, ".%03d UTC", (int)(ms % 1000));
	return buf;
}

/* ---- the command line ---- */

enum token_kind { TOK_END, TOK_WORD, TOK_QUOTED, TOK_STRING, TOK_EQUALS, TOK_SEMICOLON, TOK_OTHER };

struct token {
	enum token_kind kind;
	char text[512];           /* WORD and QUOTED as written, STRING unquoted */
};

#define MAX_TOKENS 8

/* Skip white space and SQL comments. */
static const char *skip_space(const char *p)
{
	for (;;) {
		while (isspace((unsigned char)*p))
			p++;
		if (p[0] == '-' && p[1] == '-') {
			while (*p && *p != '\n')
				p++;
		} else if (p[0] == '/' && p[1] == '*') {
			const char *end = strstr(p + 2, "*/");
			p = end ? end + 2 : p + strlen(p);
		} else {
			return p;
		}
	}
}

/* Read one quoted run ending at quote ('' or "" inside is one quote); NULL when unterminated. */
static const char *read_quoted(const char *p, char quote, char *out, size_t len)
{
	size_t n = 0;
	for (p++; *p; p++) {
		if (*p == quote) {
			if (p[1] != quote) {
				out[n] = '\0';
				return p + 1;
			}
			p++;
		}
		if (n + 1 < len)
			out[n++] = *p;
	}
	return NULL;
}

static bool is_word_char(char ch)
{
	return isalnum((unsigned char)ch) || ch == '_' || ch == '.' || ch == '-' || ch == '$';
}

/* Split text into tokens; returns the count, or -1 when a quote is unterminated. */
static int tokenize(const char *text, struct token *toks, int max)
{
	int n = 0;
	const char *p = skip_space(text);
	while (*p) {
		struct token dummy, *t = n < max ? &toks[n] : &dummy;
		if (*p == '\'' || *p == '"') {
			t->kind = *p == '\'' ? TOK_STRING : TOK_QUOTED;
			p = read_quoted(p, *p, t->text, sizeof(t->text));
			if (!p)
				return -1;
		} else if (*p == '=') {
			t->kind = TOK_EQUALS;
			str_copy(t->text, "=", sizeof(t->text));
			p++;
		} else if (*p == ';') {
			t->kind = TOK_SEMICOLON;
			str_copy(t->text, ";", sizeof(t->text));
			p++;
		} else if (is_word_char(*p)) {
			size_t len = 0;
			while (is_word_char(p[len]))
				len++;
			t->kind = TOK_WORD;
			snprintf(t->text, sizeof(t->text), "%.*s", (int)len, p);
			p += len;
		} else {
			t->kind = TOK_OTHER;
			snprintf(t->text, sizeof(t->text), "%c", *p);
			p++;
		}
		n++;
		p = skip_space(p);
	}
	return n;
}

int admin_tokenize_count(const char *text)
{
	struct token toks[MAX_TOKENS];
	return tokenize(text, toks, MAX_TOKENS);
}

/* ---- shared helpers ---- */

/* Does a database named db exist: a [databases] entry, or a pool ("*" fallback)? */
static bool database_known(struct sluice *sl, const char *db)
{
	const struct db_config *d = config_find_db(sl->cfg, db);
	if (d && strcmp(d->name, db) == 0)
		return true;
	struct pool *p;
	TAILQ_FOREACH(p, &sl->pools, entry)
		if (strcmp(p->db_name, db) == 0)
			return true;
	return false;
}

static void admin_input(struct client *c);

/* NULL-terminated lists of database names (paused_dbs, disabled_dbs), owned; sluice_name_list_has reads them. */
static bool name_list_add(char ***list, const char *db)
{
	size_t n = 0;
	while (*list && (*list)[n])
		n++;
	char **grown = realloc(*list, (n + 2) * sizeof(char *));
	if (!grown)
		return false;
	*list = grown;
	grown[n + 1] = NULL;
	return (grown[n] = strdup(db)) != NULL;
}

static void name_list_remove(char **list, const char *db)
{
	size_t n = 0;
	while (list && list[n])
		n++;
	for (size_t i = 0; i < n; i++)
		if (strcmp(list[i], db) == 0) {
			free(list[i]);
			memmove(&list[i], &list[i + 1], (n - i) * sizeof(char *));
			return;
		}
}

static void name_list_free(char ***list)
{
	for (char **d = *list; d && *d; d++)
		free(*d);
	free(*list);
	*list = NULL;
}

static bool db_paused_alone(const struct sluice *sl, const char *db)
{
	return sluice_name_list_has(sl->paused_dbs, db);
}

static bool add_paused_db(struct sluice *sl, const char *db)
{
	return name_list_add(&sl->paused_dbs, db);
}

static void remove_paused_db(struct sluice *sl, const char *db)
{
	name_list_remove(sl->paused_dbs, db);
}

static void clear_paused_dbs(struct sluice *sl)
{
	name_list_free(&sl->paused_dbs);
}

static bool in_scope(const struct pool *p, const char *db)
{
	return !db || strcmp(p->db_name, db) == 0;
}

static int servers_in_scope(struct sluice *sl, const char *db)
{
	int n = 0;
	struct pool *p;
	TAILQ_FOREACH(p, &sl->pools, entry)
		if (in_scope(p, db))
			n += p->n_login + p->n_idle + p->n_active;
	return n;
}

/* Servers that RECONNECT or a changed [databases] entry will close. */
static int close_needed_in_scope(struct sluice *sl, const char *db)
{
	int n = 0;
	struct pool *p;
	struct server *s;
	TAILQ_FOREACH(p, &sl->pools, entry) {
		if (!in_scope(p, db))
			continue;
		if (p->stale) {
			n += p->n_login + p->n_idle + p->n_active;
			continue;
		}
		TAILQ_FOREACH(s, &p->login_servers, entry)
			n += s->close_when_released;
		TAILQ_FOREACH(s, &p->idle_servers, entry)
			n += s->close_when_released;
		TAILQ_FOREACH(s, &p->active_servers, entry)
			n += s->close_when_released;
	}
	return n;
}

/* ---- waiting commands ---- */

static bool client_waits(const struct admin *a, const struct client *c)
{
	for (size_t i = 0; i < a->n_waits; i++)
		if (a->waits[i].c == c)
			return true;
	return false;
}

static void arm_timer(struct admin *a)
{
	struct timeval tv = { 0, (suseconds_t)WAIT_CHECK_USEC };
	if ((a->n_waits > 0 || a->sl->suspended) && !evtimer_pending(a->timer, NULL))
		evtimer_add(a->timer, &tv);
}

static bool add_wait(struct admin *a, struct client *c, enum wait_kind kind, const char *db)
{
	if (a->n_waits == a->cap_waits) {
		size_t cap = a->cap_waits ? a->cap_waits * 2 : 4;
		struct admin_wait *w = realloc(a->waits, cap * sizeof(*w));
		if (!w)
			return false;
		a->waits = w;
		a->cap_waits = cap;
	}
	char *copy = db ? strdup(db) : NULL;
	if (db && !copy)
		return false;
	a->waits[a->n_waits++] = (struct admin_wait){ .c = c, .kind = kind, .db = copy, .since = now_usec() };
	arm_timer(a);
	return true;
}

static void remove_wait(struct admin *a, size_t i)
{
	free(a->waits[i].db);
	a->waits[i] = a->waits[--a->n_waits];
}

static bool scope_paused(const struct sluice *sl, const char *db)
{
	return sl->paused || (db && db_paused_alone(sl, db));
}

/*
 * SUSPEND (PgBouncer, usage.md): stop reading every logged-in client and
 * every ready server, so nothing new comes in. Run again on every timer tick
 * while suspended, as a drained output may have re-enabled a peer's reads.
 */
static void stop_reading(struct sluice *sl)
{
	struct pool *p;
	struct client *c;
	struct server *s;
	TAILQ_FOREACH(p, &sl->pools, entry) {
		TAILQ_FOREACH(c, &p->active_clients, entry)
			connio_pause_read(&c->io);
		TAILQ_FOREACH(s, &p->idle_servers, entry)
			connio_pause_read(&s->io);
		TAILQ_FOREACH(s, &p->active_servers, entry)
			connio_pause_read(&s->io);
	}
}

/* RESUME after SUSPEND: read again, relaying what waited in the buffers (flow control decides as usual). */
static void start_reading(struct sluice *sl)
{
	struct pool *p;
	struct client *c, *cnext;
	struct server *s, *snext;
	TAILQ_FOREACH(p, &sl->pools, entry) {
		TAILQ_FOREACH_SAFE(s, &p->idle_servers, entry, snext)
			relay_resume(s);
		TAILQ_FOREACH_SAFE(s, &p->active_servers, entry, snext)
			relay_resume(s);
		TAILQ_FOREACH_SAFE(c, &p->active_clients, entry, cnext)
			client_resume(c);
	}
}

/* Bytes pooled clients and servers have not written yet: SUSPEND answers at 0. */
static size_t unflushed_bytes(struct sluice *sl)
{
	size_t n = 0;
	struct pool *p;
	struct client *c;
	struct server *s;
	TAILQ_FOREACH(p, &sl->pools, entry) {
		TAILQ_FOREACH(c, &p->active_clients, entry)
			n += connio_out_len(&c->io);
		TAILQ_FOREACH(s, &p->active_servers, entry)
			n += connio_out_len(&s->io);
	}
	return n;
}

/*
 * suspend_timeout (PgBouncer): a connection whose output has not drained
 * that long after SUSPEND is dropped, so SUSPEND completes. One at a time
 * from the start of the lists: closing one may change the others.
 */
static void drop_unflushed(struct sluice *sl)
{
	for (bool dropped = true; dropped;) {
		dropped = false;
		struct pool *p;
		TAILQ_FOREACH(p, &sl->pools, entry) {
			struct client *c;
			struct server *s;
			TAILQ_FOREACH(c, &p->active_clients, entry)
				if (connio_out_len(&c->io) > 0)
					break;
			if (c) {
				client_close(c, "suspend_timeout");
				dropped = true;
				break;
			}
			TAILQ_FOREACH(s, &p->active_servers, entry)
				if (connio_out_len(&s->io) > 0)
					break;
			if (s) {
				server_close(s, "suspend_timeout");
				dropped = true;
				break;
			}
		}
	}
}

static void check_waits(evutil_socket_t fd, short what, void *arg)
{
	struct admin *a = arg;
	struct sluice *sl = a->sl;
	(void)fd;
	(void)what;
	if (sl->suspended)
		stop_reading(sl);
	for (size_t i = 0; i < a->n_waits;) {
		struct admin_wait *w = &a->waits[i];
		struct client *c = w->c;
		struct msgbuf m;
		msg_init(&m);
		if (w->kind == WAIT_PAUSE && !scope_paused(sl, w->db))
			admin_error(&m, SQLSTATE_QUERY_CANCELED, NULL, NULL, "PAUSE was cancelled by RESUME");
		else if (w->kind == WAIT_PAUSE && servers_in_scope(sl, w->db) == 0)
			command_complete(&m, "PAUSE");
		else if (w->kind == WAIT_CLOSE && close_needed_in_scope(sl, w->db) == 0)
			command_complete(&m, "WAIT_CLOSE");
		else if (w->kind == WAIT_SUSPEND && !sl->suspended)
			admin_error(&m, SQLSTATE_QUERY_CANCELED, NULL, NULL, "SUSPEND was cancelled by RESUME");
		else if (w->kind == WAIT_SUSPEND && unflushed_bytes(sl) > 0 && sl->cfg->suspend_timeout > 0 &&
		         now_usec() - w->since >= sl->cfg->suspend_timeout) {
			log_warning("SUSPEND: output not flushed within suspend_timeout; dropping those connections");
			drop_unflushed(sl);
			command_complete(&m, "SUSPEND");
		} else if (w->kind == WAIT_SUSPEND && unflushed_bytes(sl) == 0)
			command_complete(&m, "SUSPEND");
		else {
			msg_free(&m);
			i++;
			continue;
		}
		remove_wait(a, i);
		send_answer(c, &m, true);
		msg_free(&m);
		admin_input(c);   /* what it sent meanwhile; may close c */
	}
	arm_timer(a);
}

/* ---- SHOW ---- */

struct admin_cmd;
typedef void (*show_fn)(struct client *c, struct msgbuf *m);

static const char *help_text =
	"SHOW HELP|CONFIG|DATABASES|POOLS|CLIENTS|SERVERS|USERS|VERSION\n"
	"SHOW PEERS|PEER_POOLS\n"
	"SHOW FDS|SOCKETS|ACTIVE_SOCKETS|LISTS|MEM|STATE\n"
	"SHOW DNS_HOSTS|DNS_ZONES\n"
	"SHOW STATS|STATS_TOTALS|STATS_AVERAGES|TOTALS\n"
	"SHOW LIMITS|USAGE|CACHE\n"
	"SET key = arg\n"
	"RELOAD\n"
	"PAUSE [<db>]\n"
	"SUSPEND\n"
	"RESUME [<db>]\n"
	"RECONNECT [<db>]\n"
	"ENABLE <db>\n"
	"DISABLE <db>\n"
	"KILL [<db>]\n"
	"KILL_CLIENT <client_id>\n"
	"WAIT_CLOSE [<db>]\n"
	"CACHE FLUSH\n"
	"SHUTDOWN [WAIT_FOR_SERVERS|WAIT_FOR_CLIENTS]";

static void show_help(struct client *c, struct msgbuf *m)
{
	(void)c;
	msg_add_error(m, PqMsg_NoticeResponse, "NOTICE", SQLSTATE_SUCCESSFUL_COMPLETION, help_text, NULL,
	              "Console usage");
	command_complete(m, "SHOW");
}

static void show_version(struct client *c, struct msgbuf *m)
{
	static const struct column cols[] = { { "version", TYPE_TEXT } };
	struct result r;
	(void)c;
	result_begin(&r, m, cols, 1);
	row_begin(&r);
	put_text(&r, "pgsluice " PACKAGE_VERSION);
	row_end(&r);
	command_complete(m, "SHOW");
}

static void show_state(struct client *c, struct msgbuf *m)
{
	static const struct column cols[] = { { "key", TYPE_TEXT }, { "value", TYPE_TEXT } };
	struct sluice *sl = c->sl;
	struct result r;
	bool paused = sl->paused || sl->paused_dbs;
	result_begin(&r, m, cols, 2);
	const char *keys[] = { "active", "paused", "suspended" };
	const char *values[] = { paused || sl->suspended ? "no" : "yes", paused ? "yes" : "no",
	                         sl->suspended ? "yes" : "no" };
	for (int i = 0; i < 3; i++) {
		row_begin(&r);
		put_text(&r, keys[i]);
		put_text(&r, values[i]);
		row_end(&r);
	}
	command_complete(m, "SHOW");
}

static void show_config(struct client *c, struct msgbuf *m)
{
	static const struct column cols[] = {
		{ "key", TYPE_TEXT }, { "value", TYPE_TEXT }, { "default", TYPE_TEXT }, { "changeable", TYPE_TEXT },
	};
	struct result r;
	size_t n;
	const struct config_key *keys = config_keys(&n);
	result_begin(&r, m, cols, 4);
	for (size_t i = 0; i < n; i++) {
		char value[1024];
		row_begin(&r);
		put_text(&r, keys[i].name);
		put_text(&r, config_format_value(c->sl->cfg, &keys[i], value, sizeof(value)));
		put_text(&r, keys[i].default_value);
		put_text(&r, keys[i].reloadable ? "yes" : "no");
		row_end(&r);
	}
	command_complete(m, "SHOW");
}

static void show_pools(struct client *c, struct msgbuf *m)
{
	static const struct column cols[] = {
		{ "database", TYPE_TEXT }, { "user", TYPE_TEXT },
		{ "cl_active", TYPE_INT4 }, { "cl_waiting", TYPE_INT4 },
		{ "cl_active_cancel_req", TYPE_INT4 }, { "cl_waiting_cancel_req", TYPE_INT4 },
		{ "sv_active", TYPE_INT4 }, { "sv_active_cancel", TYPE_INT4 }, { "sv_being_canceled", TYPE_INT4 },
		{ "sv_idle", TYPE_INT4 }, { "sv_used", TYPE_INT4 }, { "sv_tested", TYPE_INT4 }, { "sv_login", TYPE_INT4 },
		{ "maxwait", TYPE_INT4 }, { "maxwait_us", TYPE_INT4 }, { "pool_mode", TYPE_TEXT },
		{ "load_balance_hosts", TYPE_TEXT },
	};
	struct result r;
	struct pool *p;
	usec_t now = now_usec();
	result_begin(&r, m, cols, (int)(sizeof(cols) / sizeof(cols[0])));
	TAILQ_FOREACH(p, &c->sl->pools, entry) {
		int tested = 0, used = pool_count_used(p, now), active_cancel = 0, being_canceled = 0;
		const struct server *s;
		TAILQ_FOREACH(s, &p->active_servers, entry) {
			tested += s->state == SV_RESET;
			active_cancel += s->cancels && s->state == SV_ACTIVE;
			being_canceled += s->state == SV_BEING_CANCELED;
		}
		const struct client *first = TAILQ_FIRST(&p->waiting_clients);
		usec_t maxwait = first ? now - first->wait_start : 0;
		row_begin(&r);
		put_text(&r, p->db_name);
		put_text(&r, p->user_name);
		put_int(&r, p->n_clients);
		put_int(&r, p->n_waiting);
		put_int(&r, 0);
		put_int(&r, 0);
		put_int(&r, p->n_active - tested - being_canceled);
		put_int(&r, active_cancel);
		put_int(&r, being_canceled);
		put_int(&r, p->n_idle - used);
		put_int(&r, used);
		put_int(&r, tested);
		put_int(&r, p->n_login);
		put_int(&r, maxwait / USEC_PER_SEC);
		put_int(&r, maxwait % USEC_PER_SEC);
		put_text(&r, pool_mode_name(p->pool_mode));
		/* PgBouncer: set only for a host list */
		put_text(&r, server_host_count(p) > 1 ? (p->round_robin ? "round-robin" : "disable") : NULL);
		row_end(&r);
	}
	command_complete(m, "SHOW");
}

/* SHOW CLIENTS and SERVERS; SHOW SOCKETS and ACTIVE_SOCKETS add PgBouncer's buffer columns. */
static const struct column socket_cols[] = {
	{ "type", TYPE_TEXT }, { "user", TYPE_TEXT }, { "database", TYPE_TEXT }, { "replication", TYPE_TEXT },
	{ "state", TYPE_TEXT }, { "addr", TYPE_TEXT }, { "port", TYPE_INT4 },
	{ "local_addr", TYPE_TEXT }, { "local_port", TYPE_INT4 },
	{ "connect_time", TYPE_TEXT }, { "request_time", TYPE_TEXT },
	{ "wait", TYPE_INT4 }, { "wait_us", TYPE_INT4 }, { "close_needed", TYPE_INT4 },
	{ "ptr", TYPE_TEXT }, { "link", TYPE_TEXT }, { "remote_pid", TYPE_INT4 }, { "tls", TYPE_TEXT },
	{ "application_name", TYPE_TEXT }, { "prepared_statements", TYPE_INT4 }, { "id", TYPE_INT4 },
	{ "recv_pos", TYPE_INT4 }, { "pkt_pos", TYPE_INT4 }, { "pkt_remain", TYPE_INT4 },
	{ "send_pos", TYPE_INT4 }, { "send_remain", TYPE_INT4 }, { "pkt_avail", TYPE_INT4 },
	{ "send_avail", TYPE_INT4 },
};
#define N_SOCKET_DEBUG_COLS ((int)(sizeof(socket_cols) / sizeof(socket_cols[0])))
#define N_SOCKET_COLS (N_SOCKET_DEBUG_COLS - 7)

/*
 * The buffer columns of SHOW SOCKETS from the connection's own buffers
 * (connio.h): bytes read and not yet relayed, bytes of the current message
 * still to relay, bytes not yet sent, and the free room of each buffer.
 */
static void put_buffer_columns(struct result *r, const struct connio *io, uint32_t relay_left)
{
	put_uint(r, iobuf_len(&io->in));              /* recv_pos */
	put_uint(r, 0);                               /* pkt_pos: messages are read from the front */
	put_uint(r, relay_left);                      /* pkt_remain */
	put_uint(r, 0);                               /* send_pos */
	put_uint(r, iobuf_len(&io->out));             /* send_remain */
	put_uint(r, io->in.cap - io->in.end);         /* pkt_avail */
	put_uint(r, io->out.cap - io->out.end);       /* send_avail */
}

/* Text form of a socket address and its port; "unix" and 0 for unix sockets. */
static void address_text(const struct sockaddr *sa, socklen_t len, char *host, size_t hostlen, int *port)
{
	*port = 0;
	if (len == 0 || sa->sa_family == AF_UNIX) {
		str_copy(host, "unix", hostlen);
		return;
	}
	char serv[16];
	if (getnameinfo(sa, len, host, (socklen_t)hostlen, serv, sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
		str_copy(host, "", hostlen);
		return;
	}
	*port = atoi(serv);
}

static void local_address(int fd, char *host, size_t hostlen, int *port)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &len) != 0) {
		str_copy(host, "", hostlen);
		*port = 0;
		return;
	}
	address_text((struct sockaddr *)&ss, len, host, hostlen, port);
}

static const char *application_name(const struct varcache *vars)
{
	int i = varcache_index("application_name");
	return i >= 0 && varcache_get(vars, i) ? varcache_get(vars, i) : "";
}

/* SHOW CLIENTS/SERVERS "replication": PgBouncer's none, logical, physical. */
static const char *replication_name(enum replication_mode mode)
{
	return mode == REPLICATION_LOGICAL ? "logical" : mode == REPLICATION_PHYSICAL ? "physical" : "none";
}

static void client_row(struct result *r, const struct client *c, const char *state, usec_t now)
{
	char local[64], connect[64], request[64], ptr[32], link[32];
	int local_port;
	local_address(c->io.fd, local, sizeof(local), &local_port);
	usec_t wait = (c->state == CL_WAITING || c->state == CL_WAITING_LOGIN) ? now - c->wait_start : 0;
	snprintf(ptr, sizeof(ptr), "C-%llu", (unsigned long long)c->id);
	if (c->server)
		snprintf(link, sizeof(link), "S-%llu", (unsigned long long)c->server->id);
	else
		link[0] = '\0';
	int32_t remote_pid = 0;
#ifdef SO_PEERCRED
	if (c->peer.sa.sa_family == AF_UNIX) {
		struct ucred cred;
		socklen_t len = sizeof(cred);
		if (getsockopt(c->io.fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0)
			remote_pid = cred.pid;
	}
#endif
	row_begin(r);
	put_text(r, "C");
	put_text(r, c->user ? c->user : "(nouser)");
	put_text(r, c->database ? c->database : "(nodb)");
	put_text(r, replication_name(c->replication));
	put_text(r, state);
	put_text(r, CLIENT_ADDR(c));
	put_int(r, client_port(c));
	put_text(r, local);
	put_int(r, local_port);
	put_text(r, format_time(c->connect_time, connect, sizeof(connect)));
	put_text(r, format_time(c->last_activity, request, sizeof(request)));
	put_int(r, wait / USEC_PER_SEC);
	put_int(r, wait % USEC_PER_SEC);
	put_int(r, 0);
	put_text(r, ptr);
	put_text(r, link);
	put_int(r, remote_pid);
	put_text(r, "");
	put_text(r, application_name(&c->vars));
	put_uint(r, c->stmts.n);
	put_uint(r, c->id);
	if (r->ncols == N_SOCKET_DEBUG_COLS)
		put_buffer_columns(r, &c->io, c->relay_left);
	row_end(r);
}

static void show_clients(struct client *c, struct msgbuf *m)
{
	struct result r;
	struct pool *p;
	struct client *cl;
	usec_t now = now_usec();
	result_begin(&r, m, socket_cols, N_SOCKET_COLS);
	TAILQ_FOREACH(p, &c->sl->pools, entry) {
		TAILQ_FOREACH(cl, &p->active_clients, entry)
			client_row(&r, cl, cl->server ? "active" : "idle", now);
		TAILQ_FOREACH(cl, &p->waiting_clients, entry)
			client_row(&r, cl, "waiting", now);
	}
	TAILQ_FOREACH(cl, &c->sl->admin_clients, entry)
		client_row(&r, cl, "active", now);
	command_complete(m, "SHOW");
}

static void server_row(struct result *r, const struct server *s, const char *state)
{
	const struct pool *p = s->pool;
	char addr[64], local[64], connect[64], request[64], ptr[32], link[32];
	int port, local_port;
	if (s->addr_len > 0) {
		address_text((const struct sockaddr *)&s->addr, s->addr_len, addr, sizeof(addr), &port);
	} else {
		str_copy(addr, p->host && p->host[0] != '/' ? p->host : "unix", sizeof(addr));
		port = p->port;
	}
	local_address(s->io.fd, local, sizeof(local), &local_port);
	snprintf(ptr, sizeof(ptr), "S-%llu", (unsigned long long)s->id);
	if (s->client)
		snprintf(link, sizeof(link), "C-%llu", (unsigned long long)s->client->id);
	else
		link[0] = '\0';
	usec_t request_time = s->request_start > s->last_used ? s->request_start : s->last_used;
	row_begin(r);
	put_text(r, "S");
	put_text(r, p->user_name);
	put_text(r, p->db_name);
	put_text(r, replication_name(s->replication));
	put_text(r, state);
	put_text(r, addr);
	put_int(r, port);
	put_text(r, local);
	put_int(r, local_port);
	put_text(r, format_time(s->connect_time, connect, sizeof(connect)));
	put_text(r, format_time(request_time, request, sizeof(request)));
	put_int(r, 0);
	put_int(r, 0);
	put_int(r, s->close_when_released || p->stale ? 1 : 0);
	put_text(r, ptr);
	put_text(r, link);
	put_int(r, s->cancel_pid);
	put_text(r, "");
	put_text(r, s->client ? application_name(&s->client->vars) : "");
	put_uint(r, s->stmts.n);
	put_uint(r, s->id);
	if (r->ncols == N_SOCKET_DEBUG_COLS)
		put_buffer_columns(r, &s->io, s->relay_left);
	row_end(r);
}

static void show_servers(struct client *c, struct msgbuf *m)
{
	struct result r;
	struct pool *p;
	const struct server *s;
	usec_t now = now_usec();
	const struct sluice_config *cfg = c->sl->cfg;
	result_begin(&r, m, socket_cols, N_SOCKET_COLS);
	TAILQ_FOREACH(p, &c->sl->pools, entry) {
		TAILQ_FOREACH(s, &p->active_servers, entry)
			server_row(&r, s, s->state == SV_RESET ? "tested"
			                  : s->state == SV_BEING_CANCELED ? "being_canceled" : "active");
		TAILQ_FOREACH(s, &p->idle_servers, entry)
			server_row(&r, s, cfg->server_check_query[0] && now - s->last_used >= cfg->server_check_delay
			                  ? "used" : "idle");
		TAILQ_FOREACH(s, &p->login_servers, entry)
			server_row(&r, s, "new");
	}
	command_complete(m, "SHOW");
}

/* The state names SHOW SOCKETS gives servers: the pool list each sits on, as PgBouncer's. */
static const char *server_socket_state(const struct sluice_config *cfg, const struct server *s, usec_t now)
{
	switch (s->state) {
	case SV_RESET:
		return "sv_tested";
	case SV_IDLE:
		return cfg->server_check_query[0] && now - s->last_used >= cfg->server_check_delay ? "sv_used"
		                                                                                  : "sv_idle";
	case SV_LOGIN:
		return "sv_login";
	default:
		return "sv_active";
	}
}

/*
 * SHOW SOCKETS: every client and server socket with the SHOW CLIENTS columns
 * and PgBouncer's buffer columns; the state is the list it is on (cl_active,
 * cl_waiting, cl_login, sv_active, sv_idle, sv_used, sv_tested, sv_login).
 * SHOW ACTIVE_SOCKETS (active_only) lists the sockets with a request in
 * flight: waiting clients, and linked clients and servers.
 */
static void show_socket_list(struct client *c, struct msgbuf *m, bool active_only)
{
	struct sluice *sl = c->sl;
	struct result r;
	struct pool *p;
	struct client *cl;
	const struct server *s;
	usec_t now = now_usec();
	result_begin(&r, m, socket_cols, N_SOCKET_DEBUG_COLS);
	TAILQ_FOREACH(p, &sl->pools, entry) {
		TAILQ_FOREACH(cl, &p->active_clients, entry)
			if (!active_only || cl->server)
				client_row(&r, cl, "cl_active", now);
		TAILQ_FOREACH(cl, &p->waiting_clients, entry)
			client_row(&r, cl, "cl_waiting", now);
		TAILQ_FOREACH(s, &p->active_servers, entry)
			if (!active_only || s->client)
				server_row(&r, s, server_socket_state(sl->cfg, s, now));
		if (active_only)
			continue;
		TAILQ_FOREACH(s, &p->idle_servers, entry)
			server_row(&r, s, server_socket_state(sl->cfg, s, now));
		TAILQ_FOREACH(s, &p->login_servers, entry)
			server_row(&r, s, "sv_login");
	}
	if (!active_only) {
		TAILQ_FOREACH(cl, &sl->admin_clients, entry)
			client_row(&r, cl, "cl_active", now);
		TAILQ_FOREACH(cl, &sl->login_clients, entry)
			client_row(&r, cl, "cl_login", now);
	}
	command_complete(m, "SHOW");
}

static void show_sockets(struct client *c, struct msgbuf *m) { show_socket_list(c, m, false); }
static void show_active_sockets(struct client *c, struct msgbuf *m) { show_socket_list(c, m, true); }

/*
 * SHOW FDS: PgBouncer's columns for its online restart (-R). pgsluice has no
 * online restart (rolling restarts use so_reuseport, docs/migrating-from-pgbouncer.md),
 * so it lists the descriptors without passing them: no password or SCRAM keys.
 * TLS sockets are left out, as PgBouncer's.
 */
static const struct column fds_cols[] = {
	{ "fd", TYPE_INT4 }, { "task", TYPE_TEXT }, { "user", TYPE_TEXT }, { "database", TYPE_TEXT },
	{ "addr", TYPE_TEXT }, { "port", TYPE_INT4 }, { "cancel", TYPE_INT8 }, { "link", TYPE_INT4 },
	{ "client_encoding", TYPE_TEXT }, { "std_strings", TYPE_TEXT }, { "datestyle", TYPE_TEXT },
	{ "timezone", TYPE_TEXT }, { "password", TYPE_TEXT }, { "scram_client_key", TYPE_BYTEA },
	{ "scram_server_key", TYPE_BYTEA },
};

static const char *var_value(const struct varcache *vars, const char *name)
{
	int i = varcache_index(name);
	return i >= 0 ? varcache_get(vars, i) : NULL;
}

static void fd_row(struct result *r, int fd, const char *task, const char *user, const char *db,
                   const char *addr, int port, int32_t cancel_pid, int32_t cancel_key, int link,
                   const struct varcache *vars)
{
	row_begin(r);
	put_int(r, fd);
	put_text(r, task);
	put_text(r, user);
	put_text(r, db);
	put_text(r, addr);
	put_int(r, port);
	put_uint(r, ((uint64_t)(uint32_t)cancel_pid << 32) | (uint32_t)cancel_key);
	put_int(r, link);
	put_text(r, vars ? var_value(vars, "client_encoding") : NULL);
	put_text(r, vars ? var_value(vars, "standard_conforming_strings") : NULL);
	put_text(r, vars ? var_value(vars, "DateStyle") : NULL);
	put_text(r, vars ? var_value(vars, "TimeZone") : NULL);
	put_text(r, NULL);
	put_text(r, NULL);
	put_text(r, NULL);
	row_end(r);
}

static void listener_fd_row(int fd, void *arg)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char host[64];
	int port = 0;
	if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0)
		address_text((struct sockaddr *)&ss, len, host, sizeof(host), &port);
	else
		str_copy(host, "", sizeof(host));
	fd_row(arg, fd, "pooler", NULL, NULL, host, port, 0, 0, 0, NULL);
}

static void client_fd_row(struct result *r, const struct client *c)
{
	if (c->tls || (c->server && c->server->tls))
		return;
	fd_row(r, c->io.fd, "client", c->user, c->database, CLIENT_ADDR(c), client_port(c), c->cancel_pid,
	       c->cancel_key, c->server ? c->server->io.fd : 0, &c->vars);
}

static void server_fd_row(struct result *r, const struct server *s)
{
	if (s->tls || (s->client && s->client->tls))
		return;
	char addr[64];
	int port;
	if (s->addr_len > 0) {
		address_text((const struct sockaddr *)&s->addr, s->addr_len, addr, sizeof(addr), &port);
	} else {
		str_copy(addr, "unix", sizeof(addr));
		port = s->pool->port;
	}
	fd_row(r, s->io.fd, "server", s->pool->user_name, s->pool->db_name, addr, port,
	       s->cancel_pid, s->cancel_key, s->client ? s->client->io.fd : 0, &s->vars);
}

static void show_fds(struct client *c, struct msgbuf *m)
{
	struct sluice *sl = c->sl;
	struct result r;
	struct pool *p;
	struct client *cl;
	const struct server *s;
	/* cancel keys of every client: admin_users only, as PgBouncer */
	if (!c->admin_may_control) {
		admin_error(m, SQLSTATE_INSUFFICIENT_PRIVILEGE, NULL,
		            "Only users in admin_users may run it; stats_users may run the other SHOW commands.",
		            "permission denied for command \"SHOW FDS\"");
		return;
	}
	result_begin(&r, m, fds_cols, (int)(sizeof(fds_cols) / sizeof(fds_cols[0])));
	listener_foreach_fd(sl, listener_fd_row, &r);
	TAILQ_FOREACH(cl, &sl->login_clients, entry)
		client_fd_row(&r, cl);
	TAILQ_FOREACH(p, &sl->pools, entry) {
		TAILQ_FOREACH(cl, &p->active_clients, entry)
			client_fd_row(&r, cl);
		TAILQ_FOREACH(cl, &p->waiting_clients, entry)
			client_fd_row(&r, cl);
		TAILQ_FOREACH(s, &p->active_servers, entry)
			server_fd_row(&r, s);
		TAILQ_FOREACH(s, &p->idle_servers, entry)
			server_fd_row(&r, s);
		TAILQ_FOREACH(s, &p->login_servers, entry)
			server_fd_row(&r, s);
	}
	command_complete(m, "SHOW");
}

/*
 * SHOW DNS_HOSTS: PgBouncer's columns, a row per server host name whose
 * answer pgsluice keeps (dnscache.c: dns_max_ttl, dns_nxdomain_ttl; addrs
 * empty for a name that does not exist). SHOW DNS_ZONES: no rows, pgsluice
 * does not watch zone serials (dns_zone_check_period is warned about).
 */
static void dns_host_row(void *arg, const char *host, long long ttl_s, const char *addrs)
{
	struct result *r = arg;
	row_begin(r);
	put_text(r, host);
	put_int(r, ttl_s);
	put_text(r, addrs);
	row_end(r);
}

static void show_dns_hosts(struct client *c, struct msgbuf *m)
{
	static const struct column cols[] = { { "hostname", TYPE_TEXT }, { "ttl", TYPE_INT8 }, { "addrs", TYPE_TEXT } };
	struct result r;
	result_begin(&r, m, cols, 3);
	dnscache_each(c->sl, dns_host_row, &r);
	command_complete(m, "SHOW");
}

static void show_dns_zones(struct client *c, struct msgbuf *m)
{
	static const struct column cols[] = { { "zonename", TYPE_TEXT }, { "serial", TYPE_INT8 }, { "count", TYPE_INT4 } };
	struct result r;
	(void)c;
	result_begin(&r, m, cols, 3);
	command_complete(m, "SHOW");
}

/* SHOW PEERS: every [peers] entry, this process's own peer_id included, as PgBouncer 1.25 lists them. */
static void show_peers(struct client *c, struct msgbuf *m)
{
	static const struct column cols[] = {
		{ "peer_id", TYPE_INT4 }, { "host", TYPE_TEXT }, { "port", TYPE_INT4 }, { "pool_size", TYPE_INT4 },
	};
	const struct sluice_config *cfg = c->sl->cfg;
	struct result r;
	result_begin(&r, m, cols, 4);
	for (size_t i = 0; i < cfg->n_peers; i++) {
		const struct peer_config *peer = &cfg->peers[i];
		row_begin(&r);
		put_int(&r, peer->id);
		put_text(&r, peer->host);
		put_int(&r, peer->port);
		put_int(&r, peer->pool_size >= 0 ? peer->pool_size : cfg->default_pool_size);
		row_end(&r);
	}
	command_complete(m, "SHOW");
}

/*
 * SHOW PEER_POOLS: PgBouncer's columns and no rows. pgsluice passes a cancel
 * request on to its peer at once, on a connection of its own, and keeps no
 * per-peer pool of them to list.
 */
static void show_peer_pools(struct client *c, struct msgbuf *m)
{
	static const struct column cols[] = {
		{ "peer_id", TYPE_INT4 }, { "cl_active_cancel_req", TYPE_INT4 }, { "cl_waiting_cancel_req", TYPE_INT4 },
		{ "sv_active_cancel", TYPE_INT4 }, { "sv_login", TYPE_INT4 },
	};
	struct result r;
	(void)c;
	result_begin(&r, m, cols, 5);
	command_complete(m, "SHOW");
}

/* Servers and clients of database db across its pools. */
static void count_db(struct sluice *sl, const char *db, int *servers, int *clients)
{
	struct pool *p;
	*servers = *clients = 0;
	TAILQ_FOREACH(p, &sl->pools, entry)
		if (strcmp(p->db_name, db) == 0) {
			*servers += p->n_login + p->n_idle + p->n_active;
			*clients += p->n_clients + p->n_waiting;
		}
}

static void database_row(struct result *r, struct sluice *sl, const char *name, const struct db_config *d)
{
	const struct sluice_config *cfg = sl->cfg;
	int servers, clients;
	count_db(sl, name, &servers, &clients);
	row_begin(r);
	put_text(r, name);
	put_text(r, d->host);
	put_int(r, d->port);
	put_text(r, d->dbname ? d->dbname : name);
	put_text(r, d->user);
	put_int(r, d->pool_size >= 0 ? d->pool_size : cfg->default_pool_size);
	put_int(r, d->min_pool_size >= 0 ? d->min_pool_size : cfg->min_pool_size);
	put_int(r, d->reserve_pool >= 0 ? d->reserve_pool : cfg->reserve_pool_size);
	put_int(r, (d->server_lifetime >= 0 ? d->server_lifetime : cfg->server_lifetime) / USEC_PER_SEC);
	put_text(r, d->pool_mode != POOL_MODE_INHERIT ? pool_mode_name(d->pool_mode) : NULL);
	/* PgBouncer: set only for a host list */
	put_text(r, d->host && strchr(d->host, ',')
	            ? (config_load_balance_round_robin(d->load_balance_hosts ? d->load_balance_hosts
	                                                                      : cfg->load_balance_hosts)
	               ? "round-robin" : "disable")
	            : NULL);
	put_int(r, d->max_db_connections >= 0 ? d->max_db_connections : cfg->max_db_connections);
	put_int(r, servers);
	put_int(r, pool_max_db_clients(cfg, name));
	put_int(r, clients);
	put_int(r, scope_paused(sl, name) ? 1 : 0);
	put_int(r, sluice_db_disabled(sl, name) ? 1 : 0);
	row_end(r);
}

static void show_databases(struct client *c, struct msgbuf *m)
{
	static const struct column cols[] = {
		{ "name", TYPE_TEXT }, { "host", TYPE_TEXT }, { "port", TYPE_INT4 }, { "database", TYPE_TEXT },
		{ "force_user", TYPE_TEXT }, { "pool_size", TYPE_INT4 }, { "min_pool_size", TYPE_INT4 },
		{ "reserve_pool_size", TYPE_INT4 }, { "server_lifetime", TYPE_INT4 }, { "pool_mode", TYPE_TEXT },
		{ "load_balance_hosts", TYPE_TEXT }, { "max_connections", TYPE_INT4 },
		{ "current_connections", TYPE_INT4 }, { "max_client_connections", TYPE_INT4 },
		{ "current_client_connections", TYPE_INT4 }, { "paused", TYPE_INT4 }, { "disabled", TYPE_INT4 },
	};
	struct sluice *sl = c->sl;
	struct result r;
	result_begin(&r, m, cols, (int)(sizeof(cols) / sizeof(cols[0])));
	for (size_t i = 0; i < sl->cfg->n_databases; i++) {
		const struct db_config *d = &sl->cfg->databases[i];
		if (strcmp(d->name, "*") != 0)
			database_row(&r, sl, d->name, d);
	}
	/* databases served by the "*" entry, once each */
	struct pool *p, *q;
	TAILQ_FOREACH(p, &sl->pools, entry) {
		const struct db_config *d = config_find_db(sl->cfg, p->db_name);
		if (!d || strcmp(d->name, "*") != 0)
			continue;
		bool seen = false;
		for (q = TAILQ_FIRST(&sl->pools); q != p && !seen; q = TAILQ_NEXT(q, entry))
			seen = strcmp(q->db_name, p->db_name) == 0;
		if (!seen)
			database_row(&r, sl, p->db_name, d);
	}
	command_complete(m, "SHOW");
}

/* The user names SHOW USERS lists: [users] entries, pools' users, logged-in clients' users. */
struct name_set {
	const char **names;
	size_t n, cap;
};

static void name_set_add(struct name_set *set, const char *name)
{
	if (!name)
		return;
	for (size_t i = 0; i < set->n; i++)
		if (strcmp(set->names[i], name) == 0)
			return;
	if (set->n == set->cap) {
		size_t cap = set->cap ? set->cap * 2 : 16;
		const char **grown = realloc(set->names, cap * sizeof(*grown));
		if (!grown)
			return;
		set->names = grown;
		set->cap = cap;
	}
	set->names[set->n++] = name;
}

static void collect_users(struct sluice *sl, struct name_set *set)
{
	struct pool *p;
	struct client *c;
	for (size_t i = 0; i < sl->cfg->n_users; i++)
		name_set_add(set, sl->cfg->users[i].name);
	TAILQ_FOREACH(p, &sl->pools, entry) {
		name_set_add(set, p->user_name);
		TAILQ_FOREACH(c, &p->active_clients, entry)
			name_set_add(set, c->user);
		TAILQ_FOREACH(c, &p->waiting_clients, entry)
			name_set_add(set, c->user);
	}
}

static void show_users(struct client *c, struct msgbuf *m)
{
	static const struct column cols[] = {
		{ "name", TYPE_TEXT }, { "pool_size", TYPE_TEXT }, { "reserve_pool_size", TYPE_TEXT },
		{ "pool_mode", TYPE_TEXT }, { "max_user_connections", TYPE_INT4 }, { "current_connections", TYPE_INT4 },
		{ "max_user_client_connections", TYPE_INT4 }, { "current_client_connections", TYPE_INT4 },
	};
	struct sluice *sl = c->sl;
	struct result r;
	struct name_set set = { 0 };
	collect_users(sl, &set);
	result_begin(&r, m, cols, (int)(sizeof(cols) / sizeof(cols[0])));
	for (size_t i = 0; i < set.n; i++) {
		const struct user_config *u = config_find_user(sl->cfg, set.names[i]);
		row_begin(&r);
		put_text(&r, set.names[i]);
		/* PgBouncer sends these two as text, right-aligned in 9 columns, "" when not set */
		char pool_size[16] = "", reserve[16] = "";
		if (u && u->pool_size >= 0)
			snprintf(pool_size, sizeof(pool_size), "%9d", u->pool_size);
		if (u && u->reserve_pool >= 0)
			snprintf(reserve, sizeof(reserve), "%9d", u->reserve_pool);
		put_text(&r, pool_size);
		put_text(&r, reserve);
		put_text(&r, u && u->pool_mode != POOL_MODE_INHERIT ? pool_mode_name(u->pool_mode) : NULL);
		put_int(&r, u && u->max_user_connections >= 0 ? u->max_user_connections : sl->cfg->max_user_connections);
		put_int(&r, pool_count_user_servers(sl, set.names[i]));
		put_int(&r, pool_max_user_clients(sl->cfg, set.names[i]));
		put_int(&r, pool_count_user_clients(sl, set.names[i]));
		row_end(&r);
	}
	free(set.names);
	command_complete(m, "SHOW");
}

static void show_lists(struct client *c, struct msgbuf *m)
{
	static const struct column cols[] = { { "list", TYPE_TEXT }, { "items", TYPE_INT4 } };
	struct sluice *sl = c->sl;
	struct result r;
	struct pool *p;
	struct client *cl;
	struct name_set users = { 0 };
	int pools = 0, servers = 0, login = 0, databases = 0;
	collect_users(sl, &users);
	TAILQ_FOREACH(p, &sl->pools, entry) {
		pools++;
		servers += p->n_login + p->n_idle + p->n_active;
	}
	TAILQ_FOREACH(cl, &sl->login_clients, entry)
		login++;
	for (size_t i = 0; i < sl->cfg->n_databases; i++)
		databases += strcmp(sl->cfg->databases[i].name, "*") != 0;
	int peers = 0;
	for (size_t i = 0; i < sl->cfg->n_peers; i++)
		peers += sl->cfg->peers[i].id != sl->cfg->peer_id;
	const struct {
		const char *name;
		int64_t items;
	} rows[] = {
		{ "databases", databases }, { "users", (int64_t)users.n }, { "peers", peers }, { "pools", pools },
		{ "peer_pools", 0 }, { "free_clients", 0 }, { "used_clients", sl->n_clients },
		{ "login_clients", login }, { "free_servers", 0 }, { "used_servers", servers },
		{ "dns_names", 0 }, { "dns_zones", 0 }, { "dns_queries", 0 }, { "dns_pending", 0 },
	};
	free(users.names);
	result_begin(&r, m, cols, 2);
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		row_begin(&r);
		put_text(&r, rows[i].name);
		put_int(&r, rows[i].items);
		row_end(&r);
	}
	command_complete(m, "SHOW");
}

static void show_mem(struct client *c, struct msgbuf *m)
{
	static const struct column cols[] = {
		{ "name", TYPE_TEXT }, { "size", TYPE_INT4 }, { "used", TYPE_INT4 }, { "free", TYPE_INT4 },
		{ "memtotal", TYPE_INT4 },
	};
	struct sluice *sl = c->sl;
	struct result r;
	struct pool *p;
	int64_t pools = 0, servers = 0;
	TAILQ_FOREACH(p, &sl->pools, entry) {
		pools++;
		servers += p->n_login + p->n_idle + p->n_active;
	}
	struct limits_stats ls = { 0 };
	if (sl->limits)
		limits_get_stats(sl->limits, &ls);
	/* pgsluice allocates each object on its own (no slabs): "free" is always 0 */
	const struct {
		const char *name;
		int64_t size, used;
	} rows[] = {
		{ "client", (int64_t)sizeof(struct client), sl->n_clients },
		{ "server", (int64_t)sizeof(struct server), servers },
		{ "pool", (int64_t)sizeof(struct pool), pools },
		{ "limit_counter", 260, (int64_t)ls.entries },
		{ "usage_counter", (int64_t)ai_stats_entry_size(), (int64_t)ai_stats_entries(sl->ai_stats) },
	};
	result_begin(&r, m, cols, 5);
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		row_begin(&r);
		put_text(&r, rows[i].name);
		put_int(&r, rows[i].size);
		put_int(&r, rows[i].used);
		put_int(&r, 0);
		put_int(&r, rows[i].size * rows[i].used);
		row_end(&r);
	}
	command_complete(m, "SHOW");
}

/* ---- SHOW STATS, STATS_TOTALS, STATS_AVERAGES ---- */

enum stats_view { STATS_ALL, STATS_TOTALS, STATS_AVERAGES };

struct stats_ctx {
	struct result r;
	enum stats_view view;
};

static void put_stats(struct result *r, const struct pool_stats *s)
{
	put_uint(r, s->server_assignments);
	put_uint(r, s->xact_count);
	put_uint(r, s->query_count);
	put_uint(r, s->bytes_received);
	put_uint(r, s->bytes_sent);
	put_uint(r, s->xact_time_usec);
	put_uint(r, s->query_time_usec);
	put_uint(r, s->wait_time_usec);
	put_uint(r, s->parse_count);
	put_uint(r, 0);                 /* server_parse_count: not counted (docs/admin.md) */
	put_uint(r, s->bind_count);
}

static void stats_row(const char *database, const struct pool_stats *total, const struct pool_stats *avg, void *arg)
{
	struct stats_ctx *ctx = arg;
	row_begin(&ctx->r);
	put_text(&ctx->r, database);
	if (ctx->view != STATS_AVERAGES)
		put_stats(&ctx->r, total);
	if (ctx->view != STATS_TOTALS)
		put_stats(&ctx->r, avg);
	row_end(&ctx->r);
}

static void show_stats_view(struct client *c, struct msgbuf *m, enum stats_view view)
{
	/* PgBouncer's names: SHOW STATS prefixes total_ and avg_, the other two do not */
	static const char *const total_names[] = {
		"total_server_assignment_count", "total_xact_count", "total_query_count", "total_received",
		"total_sent", "total_xact_time", "total_query_time", "total_wait_time",
		"total_client_parse_count", "total_server_parse_count", "total_bind_count",
	};
	static const char *const avg_names[] = {
		"avg_server_assignment_count", "avg_xact_count", "avg_query_count", "avg_recv", "avg_sent",
		"avg_xact_time", "avg_query_time", "avg_wait_time", "avg_client_parse_count",
		"avg_server_parse_count", "avg_bind_count",
	};
	static const char *const plain_names[] = {
		"server_assignment_count", "xact_count", "query_count", "bytes_received", "bytes_sent",
		"xact_time", "query_time", "wait_time", "client_parse_count", "server_parse_count", "bind_count",
	};
	/* SHOW STATS_AVERAGES keeps the avg_ prefix on its last three columns, as PgBouncer's */
	static const char *const plain_avg_names[] = {
		"server_assignment_count", "xact_count", "query_count", "bytes_received", "bytes_sent",
		"xact_time", "query_time", "wait_time", "avg_client_parse_count", "avg_server_parse_count",
		"avg_bind_count",
	};
	struct column cols[1 + 2 * 11];
	int n = 0;
	cols[n++] = (struct column){ "database", TYPE_TEXT };
	for (int i = 0; i < 11; i++)
		if (view != STATS_AVERAGES)
			cols[n++] = (struct column){ view == STATS_ALL ? total_names[i] : plain_names[i], TYPE_NUMERIC };
	for (int i = 0; i < 11; i++)
		if (view != STATS_TOTALS)
			cols[n++] = (struct column){ view == STATS_ALL ? avg_names[i] : plain_avg_names[i], TYPE_NUMERIC };
	struct stats_ctx ctx = { .view = view };
	result_begin(&ctx.r, m, cols, n);
	metrics_foreach_database(c->sl, stats_row, &ctx);
	command_complete(m, "SHOW");
}

static void show_stats(struct client *c, struct msgbuf *m) { show_stats_view(c, m, STATS_ALL); }
static void show_stats_totals(struct client *c, struct msgbuf *m) { show_stats_view(c, m, STATS_TOTALS); }
static void show_stats_averages(struct client *c, struct msgbuf *m) { show_stats_view(c, m, STATS_AVERAGES); }

/*
 * SHOW TOTALS: SHOW STATS summed over every database, one (name, value) row
 * per counter. Rates add up; per-transaction, per-query and per-assignment
 * times are weighted by their databases' rates.
 */
struct totals_ctx {
	struct pool_stats total, avg;
	double xact_time, query_time, wait_time;   /* sums of avg time * avg rate */
};

static void totals_add(const char *database, const struct pool_stats *total, const struct pool_stats *avg, void *arg)
{
	struct totals_ctx *t = arg;
	(void)database;
	t->total.server_assignments += total->server_assignments;
	t->total.xact_count += total->xact_count;
	t->total.query_count += total->query_count;
	t->total.bytes_received += total->bytes_received;
	t->total.bytes_sent += total->bytes_sent;
	t->total.xact_time_usec += total->xact_time_usec;
	t->total.query_time_usec += total->query_time_usec;
	t->total.wait_time_usec += total->wait_time_usec;
	t->total.parse_count += total->parse_count;
	t->total.bind_count += total->bind_count;
	t->avg.server_assignments += avg->server_assignments;
	t->avg.xact_count += avg->xact_count;
	t->avg.query_count += avg->query_count;
	t->avg.bytes_received += avg->bytes_received;
	t->avg.bytes_sent += avg->bytes_sent;
	t->avg.parse_count += avg->parse_count;
	t->avg.bind_count += avg->bind_count;
	t->xact_time += (double)avg->xact_time_usec * (double)avg->xact_count;
	t->query_time += (double)avg->query_time_usec * (double)avg->query_count;
	t->wait_time += (double)avg->wait_time_usec * (double)avg->server_assignments;
}

static void show_totals(struct client *c, struct msgbuf *m)
{
	static const struct column cols[] = { { "name", TYPE_TEXT }, { "value", TYPE_NUMERIC } };
	/* PgBouncer's names: its counters' field names after total_ and avg_ */
	static const char *const names[] = {
		"server_assignment_count", "xact_count", "query_count", "client_bytes", "server_bytes",
		"xact_time", "query_time", "wait_time", "ps_client_parse_count", "ps_server_parse_count",
		"ps_bind_count",
	};
	struct totals_ctx t;
	memset(&t, 0, sizeof(t));
	metrics_foreach_database(c->sl, totals_add, &t);
	if (t.avg.xact_count)
		t.avg.xact_time_usec = (uint64_t)(t.xact_time / (double)t.avg.xact_count);
	if (t.avg.query_count)
		t.avg.query_time_usec = (uint64_t)(t.query_time / (double)t.avg.query_count);
	if (t.avg.server_assignments)
		t.avg.wait_time_usec = (uint64_t)(t.wait_time / (double)t.avg.server_assignments);
	const struct pool_stats *sets[] = { &t.total, &t.avg };
	struct result r;
	result_begin(&r, m, cols, 2);
	for (int set = 0; set < 2; set++) {
		const struct pool_stats *st = sets[set];
		const uint64_t values[] = {
			st->server_assignments, st->xact_count, st->query_count, st->bytes_received, st->bytes_sent,
			st->xact_time_usec, st->query_time_usec, st->wait_time_usec, st->parse_count,
			0 /* server_parse_count: not counted (docs/admin.md) */, st->bind_count,
		};
		for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
			char name[64];
			snprintf(name, sizeof(name), "%s_%s", set == 0 ? "total" : "avg", names[i]);
			row_begin(&r);
			put_text(&r, name);
			put_uint(&r, values[i]);
			row_end(&r);
		}
	}
	command_complete(m, "SHOW");
}

/* ---- SHOW LIMITS, USAGE, CACHE (the AI middleware) ---- */

struct limit_row {
	char *subject;
	char *model;
	enum limit_dim dim;
	double limit, used, remaining;
	int64_t reset_at_ms;
};

struct limit_rows {
	struct limit_row *rows;
	size_t n, cap;
	bool failed;
};

static void collect_limit(const struct limit_status *st, void *arg)
{
	struct limit_rows *lr = arg;
	if (lr->failed)
		return;
	if (lr->n == lr->cap) {
		size_t cap = lr->cap ? lr->cap * 2 : 64;
		struct limit_row *grown = realloc(lr->rows, cap * sizeof(*grown));
		if (!grown) {
			lr->failed = true;
			return;
		}
		lr->rows = grown;
		lr->cap = cap;
	}
	struct limit_row *row = &lr->rows[lr->n];
	row->subject = strdup(st->subject);
	row->model = strdup(st->model ? st->model : "");
	if (!row->subject || !row->model) {
		free(row->subject);
		free(row->model);
		lr->failed = true;
		return;
	}
	row->dim = st->dim;
	row->limit = st->limit;
	row->used = st->used;
	row->remaining = st->remaining;
	row->reset_at_ms = st->reset_at_ms;
	lr->n++;
}

static int compare_limit_rows(const void *a, const void *b)
{
	const struct limit_row *x = a, *y = b;
	int d = strcmp(x->subject, y->subject);
	if (!d)
		d = strcmp(x->model, y->model);
	return d ? d : (int)x->dim - (int)y->dim;
}

static void show_limits(struct client *c, struct msgbuf *m)
{
	static const struct column cols[] = {
		{ "subject", TYPE_TEXT }, { "model", TYPE_TEXT }, { "limit_name", TYPE_TEXT },
		{ "limit_value", TYPE_NUMERIC }, { "used", TYPE_NUMERIC }, { "remaining", TYPE_NUMERIC },
		{ "reset_at", TYPE_TEXT },
	};
	struct limit_rows lr = { 0 };
	if (c->sl->limits)
		limits_foreach_status(c->sl->limits, wall_usec() / 1000, collect_limit, &lr);
	if (lr.failed) {
		admin_error(m, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "out of memory");
	} else {
		struct result r;
		if (lr.n > 1)
			qsort(lr.rows, lr.n, sizeof(*lr.rows), compare_limit_rows);
		result_begin(&r, m, cols, (int)(sizeof(cols) / sizeof(cols[0])));
		for (size_t i = 0; i < lr.n; i++) {
			char when[64];
			row_begin(&r);
			put_text(&r, lr.rows[i].subject);
			put_text(&r, lr.rows[i].model);
			put_text(&r, limit_dim_name(lr.rows[i].dim));
			put_number(&r, lr.rows[i].limit);
			put_number(&r, lr.rows[i].used);
			put_number(&r, lr.rows[i].remaining);
			put_text(&r, format_wall_ms(lr.rows[i].reset_at_ms, when, sizeof(when)));
			row_end(&r);
		}
		command_complete(m, "SHOW");
	}
	for (size_t i = 0; i < lr.n; i++) {
		free(lr.rows[i].subject);
		free(lr.rows[i].model);
	}
	free(lr.rows);
}

struct usage_rows {
	struct ai_usage_row *rows;
	char **names;              /* copies of subject and model, two per row */
	size_t n, cap;
	bool failed;
};

static void collect_usage(const struct ai_usage_row *row, void *arg)
{
	struct usage_rows *ur = arg;
	if (ur->failed)
		return;
	if (ur->n == ur->cap) {
		size_t cap = ur->cap ? ur->cap * 2 : 64;
		struct ai_usage_row *rows = realloc(ur->rows, cap * sizeof(*rows));
		if (rows)
			ur->rows = rows;
		char **names = rows ? realloc(ur->names, 2 * cap * sizeof(*names)) : NULL;
		if (!names) {
			ur->failed = true;
			return;
		}
		ur->names = names;
		ur->cap = cap;
	}
	ur->rows[ur->n] = *row;
	ur->names[2 * ur->n] = (char *)row->subject;     /* valid for the whole call: the table is not changed */
	ur->names[2 * ur->n + 1] = (char *)row->model;
	ur->n++;
}

static int compare_usage_rows(const void *a, const void *b)
{
	const struct ai_usage_row *x = a, *y = b;
	int d = strcmp(x->subject, y->subject);
	return d ? d : strcmp(x->model, y->model);
}

static void show_usage(struct client *c, struct msgbuf *m)
{
	static const struct column cols[] = {
		{ "subject", TYPE_TEXT }, { "model", TYPE_TEXT }, { "requests", TYPE_INT8 }, { "refusals", TYPE_INT8 },
		{ "input_tokens", TYPE_INT8 }, { "output_tokens", TYPE_INT8 }, { "cost_cents", TYPE_NUMERIC },
		{ "rejected", TYPE_INT8 },
	};
	struct usage_rows ur = { 0 };
	ai_stats_foreach(c->sl->ai_stats, collect_usage, &ur);
	if (ur.failed) {
		admin_error(m, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "out of memory");
	} else {
		struct result r;
		if (ur.n > 1)
			qsort(ur.rows, ur.n, sizeof(*ur.rows), compare_usage_rows);
		result_begin(&r, m, cols, (int)(sizeof(cols) / sizeof(cols[0])));
		for (size_t i = 0; i < ur.n; i++) {
			row_begin(&r);
			put_text(&r, ur.rows[i].subject);
			put_text(&r, ur.rows[i].model);
			put_uint(&r, ur.rows[i].requests);
			put_uint(&r, ur.rows[i].refusals);
			put_uint(&r, ur.rows[i].input_tokens);
			put_uint(&r, ur.rows[i].output_tokens);
			put_number(&r, ur.rows[i].cost_cents);
			put_uint(&r, ur.rows[i].rejected);
			row_end(&r);
		}
		command_complete(m, "SHOW");
	}
	free(ur.rows);
	free(ur.names);
}

static void show_cache(struct client *c, struct msgbuf *m)
{
	static const struct column cols[] = {
		{ "entries", TYPE_INT8 }, { "bytes", TYPE_INT8 }, { "hits", TYPE_INT8 }, { "misses", TYPE_INT8 },
		{ "evictions", TYPE_INT8 }, { "hit_rate", TYPE_NUMERIC },
	};
	struct result r;
	struct cache_stats cs = cache_stats(c->sl->cache);
	uint64_t lookups = cs.hits + cs.misses;
	result_begin(&r, m, cols, 6);
	row_begin(&r);
	put_int(&r, (int64_t)cs.entries);
	put_int(&r, (int64_t)cs.bytes);
	put_int(&r, (int64_t)cs.hits);
	put_int(&r, (int64_t)cs.misses);
	put_int(&r, (int64_t)cs.evictions);
	put_number(&r, lookups ? (double)cs.hits / (double)lookups : 0);
	row_end(&r);
	command_complete(m, "SHOW");
}

/* Parameters some drivers SHOW and SET on any connection; the console plays along (as PgBouncer). */
static const struct { const char *name, *value; } fake_params[] = {
	{ "client_encoding", "UTF8" }, { "default_transaction_isolation", "read committed" },
	{ "standard_conforming_strings", "on" }, { "datestyle", "ISO, MDY" }, { "timezone", "UTC" },
	{ "extra_float_digits", "2" }, { "application_name", "" },
};

static int fake_param(const char *name)
{
	for (size_t i = 0; i < sizeof(fake_params) / sizeof(fake_params[0]); i++)
		if (strcasecmp(name, fake_params[i].name) == 0)
			return (int)i;
	return -1;
}

static const struct {
	const char *name;
	show_fn fn;
} show_commands[] = {
	{ "help", show_help }, { "version", show_version }, { "state", show_state },
	{ "config", show_config }, { "pools", show_pools }, { "clients", show_clients },
	{ "servers", show_servers }, { "databases", show_databases }, { "users", show_users },
	{ "lists", show_lists }, { "mem", show_mem }, { "stats", show_stats },
	{ "stats_totals", show_stats_totals }, { "stats_averages", show_stats_averages },
	{ "limits", show_limits }, { "usage", show_usage }, { "cache", show_cache },
	{ "totals", show_totals }, { "sockets", show_sockets }, { "active_sockets", show_active_sockets },
	{ "fds", show_fds }, { "dns_hosts", show_dns_hosts }, { "dns_zones", show_dns_zones },
	{ "peers", show_peers }, { "peer_pools", show_peer_pools },
};

/* PgBouncer commands pgsluice answers with 0A000 rather than a syntax error. */
static const char *const unsupported_commands[] = {
	NULL
};
static const char *const unsupported_shows[] = {
	NULL
};

static bool in_word_list(const char *const *list, const char *word)
{
	for (; *list; list++)
		if (strcasecmp(*list, word) == 0)
			return true;
	return false;
}

/* ---- control commands ---- */

/* The database argument of PAUSE & co.: NULL for none, "" after an error was written. */
static const char *db_argument(struct client *c, struct msgbuf *m, const struct token *toks, int n)
{
	if (n == 1)
		return NULL;
	if (toks[1].kind != TOK_WORD && toks[1].kind != TOK_QUOTED) {
		admin_error(m, SQLSTATE_SYNTAX_ERROR, NULL, NULL, "syntax error at or near \"%s\"", toks[1].text);
		return "";
	}
	if (!database_known(c->sl, toks[1].text)) {
		/* PgBouncer's text and SQLSTATE: scripts match them */
		admin_error(m, SQLSTATE_PROTOCOL_VIOLATION, NULL, NULL, "no such database: %s", toks[1].text);
		return "";
	}
	return toks[1].text;
}

/* Pause db (NULL: every database) and close its idle servers. */
static bool pause_scope(struct sluice *sl, const char *db)
{
	if (db) {
		if (!db_paused_alone(sl, db) && !add_paused_db(sl, db))
			return false;
	} else {
		sl->paused = true;
	}
	struct pool *p;
	TAILQ_FOREACH(p, &sl->pools, entry)
		if (in_scope(p, db))
			pool_close_idle(p, "database paused");
	log_info("%s paused by the admin console", db ? db : "every database");
	return true;
}

static void resume_pools(struct sluice *sl)
{
	struct pool *p;
	TAILQ_FOREACH(p, &sl->pools, entry)
		if (!pool_is_paused(p))
			pool_resume(p);
}

bool admin_pause(struct sluice *sl, char *errbuf, size_t errlen)
{
	if (sl->paused || sl->suspended) {
		snprintf(errbuf, errlen, "pgsluice is already %s", sl->suspended ? "suspended" : "paused");
		return false;
	}
	pause_scope(sl, NULL);
	return true;
}

bool admin_resume(struct sluice *sl, char *errbuf, size_t errlen)
{
	if (sl->shutting_down) {   /* PgBouncer: SHUTDOWN WAIT_FOR_SERVERS is not undone by RESUME */
		snprintf(errbuf, errlen, "pooler is shutting down");   /* PgBouncer's text */
		return false;
	}
	if (sl->suspended) {
		sl->suspended = false;
		listener_set_accepting(sl, true);
		start_reading(sl);
		log_info("continuing from SUSPEND");
		return true;
	}
	if (!sl->paused && !sl->paused_dbs) {
		snprintf(errbuf, errlen, "pgsluice is not paused");
		return false;
	}
	sl->paused = false;
	clear_paused_dbs(sl);
	log_info("every database resumed");
	resume_pools(sl);
	return true;
}

/* PAUSE [db]: answers once the servers of db are closed. Returns false when the answer waits. */
static bool cmd_pause(struct client *c, struct msgbuf *m, const struct token *toks, int n)
{
	struct sluice *sl = c->sl;
	const char *db = db_argument(c, m, toks, n);
	if (db && !*db)
		return true;
	if (sl->paused || sl->suspended) {
		admin_error(m, SQLSTATE_OBJECT_NOT_IN_STATE, NULL, "RESUME ends the pause.", "pgsluice is already %s",
		            sl->suspended ? "suspended" : "paused");
		return true;
	}
	if (db && db_paused_alone(sl, db)) {
		admin_error(m, SQLSTATE_OBJECT_NOT_IN_STATE, NULL, "RESUME ends the pause.",
		            "database \"%s\" is already paused", db);
		return true;
	}
	if (!pause_scope(sl, db)) {
		admin_error(m, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "out of memory");
		return true;
	}
	if (servers_in_scope(sl, db) == 0) {
		command_complete(m, "PAUSE");
		return true;
	}
	if (!add_wait(sl->admin, c, WAIT_PAUSE, db)) {
		admin_error(m, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "out of memory");
		return true;
	}
	return false;
}

/*
 * SUSPEND (PgBouncer usage.md): stop accepting and stop reading every pooled
 * socket; answers once their output is flushed. RESUME undoes it. Returns
 * false when the answer waits.
 */
static bool cmd_suspend(struct client *c, struct msgbuf *m, const struct token *toks, int n)
{
	struct sluice *sl = c->sl;
	(void)toks;
	(void)n;
	if (sl->paused || sl->paused_dbs || sl->suspended) {
		admin_error(m, SQLSTATE_OBJECT_NOT_IN_STATE, NULL, "RESUME ends the pause.",
		            "pgsluice is already %s", sl->suspended ? "suspended" : "paused");
		return true;
	}
	if (sl->shutting_down) {
		admin_error(m, SQLSTATE_OBJECT_NOT_IN_STATE, NULL, NULL, "pgsluice is shutting down");
		return true;
	}
	log_info("SUSPEND command issued by %s", c->user);
	sl->suspended = true;
	listener_set_accepting(sl, false);
	stop_reading(sl);
	if (unflushed_bytes(sl) == 0) {
		command_complete(m, "SUSPEND");
		arm_timer(sl->admin);
		return true;
	}
	if (!add_wait(sl->admin, c, WAIT_SUSPEND, NULL)) {
		admin_error(m, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "out of memory");
		return true;
	}
	return false;
}

static bool cmd_resume(struct client *c, struct msgbuf *m, const struct token *toks, int n)
{
	struct sluice *sl = c->sl;
	char err[128];
	const char *db = db_argument(c, m, toks, n);
	if (db && !*db)
		return true;
	if (!db) {
		if (!admin_resume(sl, err, sizeof(err)))   /* during shutdown PgBouncer's SQLSTATE, 08P01 */
			admin_error(m, sl->shutting_down ? SQLSTATE_PROTOCOL_VIOLATION : SQLSTATE_OBJECT_NOT_IN_STATE,
			            NULL, NULL, "%s", err);
		else
			command_complete(m, "RESUME");
		return true;
	}
	if (!db_paused_alone(sl, db)) {
		if (sl->paused)
			admin_error(m, SQLSTATE_OBJECT_NOT_IN_STATE, NULL, "RESUME without a database resumes every database.",
			            "database \"%s\" is paused with every other database", db);
		else
			admin_error(m, SQLSTATE_OBJECT_NOT_IN_STATE, NULL, NULL, "database \"%s\" is not paused", db);
		return true;
	}
	remove_paused_db(sl, db);
	log_info("%s resumed by the admin console", db);
	resume_pools(sl);
	command_complete(m, "RESUME");
	return true;
}

/* ENABLE db / DISABLE db (PgBouncer): new logins to db are refused while it is disabled. */
static bool cmd_enable_disable(struct client *c, struct msgbuf *m, const struct token *toks, int n)
{
	struct sluice *sl = c->sl;
	bool disable = strcasecmp(toks[0].text, "disable") == 0;
	const char *tag = disable ? "DISABLE" : "ENABLE";
	if (n < 2) {
		admin_error(m, SQLSTATE_SYNTAX_ERROR, NULL, NULL, "%s needs a database name", tag);
		return true;
	}
	const char *db = db_argument(c, m, toks, n);
	if (!db || !*db)
		return true;
	if (disable && !sluice_db_disabled(sl, db) && !name_list_add(&sl->disabled_dbs, db)) {
		admin_error(m, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "out of memory");
		return true;
	}
	if (!disable)
		name_list_remove(sl->disabled_dbs, db);
	log_info("%s %s command issued by %s", tag, db, c->user);
	command_complete(m, tag);
	return true;
}

static bool cmd_kill(struct client *c, struct msgbuf *m, const struct token *toks, int n)
{
	struct sluice *sl = c->sl;
	const char *db = db_argument(c, m, toks, n);
	if (db && !*db)
		return true;
	if (!pause_scope(sl, db)) {
		admin_error(m, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "out of memory");
		return true;
	}
	struct pool *p;
	TAILQ_FOREACH(p, &sl->pools, entry)
		if (in_scope(p, db))
			pool_kill(p);
	log_info("connections of %s killed by the admin console", db ? db : "every database");
	command_complete(m, "KILL");
	return true;
}

static struct client *find_client(struct sluice *sl, uint64_t id)
{
	struct pool *p;
	struct client *c;
	TAILQ_FOREACH(p, &sl->pools, entry) {
		TAILQ_FOREACH(c, &p->active_clients, entry)
			if (c->id == id)
				return c;
		TAILQ_FOREACH(c, &p->waiting_clients, entry)
			if (c->id == id)
				return c;
	}
	TAILQ_FOREACH(c, &sl->login_clients, entry)
		if (c->id == id)
			return c;
	TAILQ_FOREACH(c, &sl->admin_clients, entry)
		if (c->id == id)
			return c;
	return NULL;
}

static bool cmd_kill_client(struct client *c, struct msgbuf *m, const struct token *toks, int n)
{
	char *end;
	if (n != 2 || toks[1].kind != TOK_WORD) {
		admin_error(m, SQLSTATE_SYNTAX_ERROR, NULL, "Write KILL_CLIENT and the id of SHOW CLIENTS.",
		            "KILL_CLIENT needs a client id");
		return true;
	}
	errno = 0;
	unsigned long long id = strtoull(toks[1].text, &end, 10);
	if (errno || *end || !isdigit((unsigned char)toks[1].text[0])) {
		/* PgBouncer's text and SQLSTATE: scripts match them */
		admin_error(m, SQLSTATE_PROTOCOL_VIOLATION, NULL, NULL, "invalid client pointer supplied");
		return true;
	}
	struct client *target = find_client(c->sl, (uint64_t)id);
	if (!target) {
		admin_error(m, SQLSTATE_PROTOCOL_VIOLATION, NULL, NULL, "client not found");
		return true;
	}
	log_info("C-%llu killed by the admin console", id);
	command_complete(m, "KILL_CLIENT");   /* dropped when c killed itself */
	client_fatal(target, SQLSTATE_ADMIN_SHUTDOWN, NULL, NULL, "terminating connection due to administrator command");
	return true;
}

static bool cmd_reconnect(struct client *c, struct msgbuf *m, const struct token *toks, int n)
{
	const char *db = db_argument(c, m, toks, n);
	if (db && !*db)
		return true;
	struct pool *p;
	TAILQ_FOREACH(p, &c->sl->pools, entry)
		if (in_scope(p, db))
			pool_reconnect(p, "reconnect requested");
	command_complete(m, "RECONNECT");
	return true;
}

static bool cmd_wait_close(struct client *c, struct msgbuf *m, const struct token *toks, int n)
{
	const char *db = db_argument(c, m, toks, n);
	if (db && !*db)
		return true;
	if (close_needed_in_scope(c->sl, db) == 0) {
		command_complete(m, "WAIT_CLOSE");
		return true;
	}
	if (!add_wait(c->sl->admin, c, WAIT_CLOSE, db)) {
		admin_error(m, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "out of memory");
		return true;
	}
	return false;
}

static bool cmd_reload(struct client *c, struct msgbuf *m, const struct token *toks, int n)
{
	(void)toks;
	(void)n;
	if (!c->sl->hooks.reload) {
		admin_error(m, SQLSTATE_FEATURE_NOT_SUPPORTED, NULL, NULL, "RELOAD is not available");
		return true;
	}
	char err[1024];
	if (!c->sl->hooks.reload(c->sl, err, sizeof(err))) {
		/* the file's error names file:line; the running configuration is kept */
		admin_error(m, SQLSTATE_CONFIG_FILE_ERROR, err,
		            "The running configuration is kept; fix the file and RELOAD again.",
		            "RELOAD failed, see logs for additional details");
		return true;
	}
	command_complete(m, "RELOAD");
	return true;
}

/*
 * SHUTDOWN [WAIT_FOR_SERVERS | WAIT_FOR_CLIENTS], as PgBouncer 1.23+ (usage.md
 * "Process control commands"): plain SHUTDOWN stops now (after storing usage
 * records, up to 5 s); the others are what SIGINT and SIGTERM do.
 */
static bool cmd_shutdown(struct client *c, struct msgbuf *m, const struct token *toks, int n)
{
	struct sluice *sl = c->sl;
	enum sluice_shutdown mode = SHUTDOWN_NOW;
	if (n == 2 && toks[1].kind == TOK_WORD && strcasecmp(toks[1].text, "wait_for_servers") == 0)
		mode = SHUTDOWN_WAIT_FOR_SERVERS;
	else if (n == 2 && toks[1].kind == TOK_WORD && strcasecmp(toks[1].text, "wait_for_clients") == 0)
		mode = SHUTDOWN_WAIT_FOR_CLIENTS;
	else if (n == 2) {
		admin_error(m, SQLSTATE_SYNTAX_ERROR, NULL, "SHUTDOWN takes WAIT_FOR_SERVERS or WAIT_FOR_CLIENTS.",
		            "syntax error at or near \"%s\"", toks[1].text);
		return true;
	}
	if (!sl->hooks.shutdown) {
		admin_error(m, SQLSTATE_FEATURE_NOT_SUPPORTED, NULL, NULL, "SHUTDOWN is not available");
		return true;
	}
	if (mode != SHUTDOWN_NOW && sl->shutting_down) {
		admin_error(m, SQLSTATE_OBJECT_NOT_IN_STATE, NULL, "SHUTDOWN without an argument stops at once.",
		            "pgsluice is already shutting down");
		return true;
	}
	log_info("SHUTDOWN%s%s command issued by %s", n == 2 ? " " : "", n == 2 ? toks[1].text : "", c->user);
	command_complete(m, "SHUTDOWN");
	sl->hooks.shutdown(sl, mode);
	return true;
}

static bool cmd_cache(struct client *c, struct msgbuf *m, const struct token *toks, int n)
{
	if (n != 2 || strcasecmp(toks[1].text, "flush") != 0) {
		admin_error(m, SQLSTATE_SYNTAX_ERROR, NULL, "SHOW HELP lists the commands.",
		            "syntax error at or near \"%s\"", n > 1 ? toks[1].text : "CACHE");
		return true;
	}
	uint64_t dropped = cache_flush(c->sl->cache);
	log_info("CACHE FLUSH by %s: %llu entries dropped", c->user, (unsigned long long)dropped);
	command_complete(m, "CACHE FLUSH");
	return true;
}

/* SET key = value, SET key TO value. */
static bool cmd_set(struct client *c, struct msgbuf *m, const struct token *toks, int n)
{
	struct sluice *sl = c->sl;
	char err[512], value[512];
	if (n < 3 || (toks[1].kind != TOK_WORD && toks[1].kind != TOK_QUOTED) ||
	    !(toks[2].kind == TOK_EQUALS || (toks[2].kind == TOK_WORD && strcasecmp(toks[2].text, "to") == 0))) {
		admin_error(m, SQLSTATE_SYNTAX_ERROR, NULL, "Write SET key = value.", "syntax error in SET");
		return true;
	}
	/* the value: one word or string, or words with spaces as in "SET datestyle = ISO, MDY" */
	value[0] = '\0';
	for (int i = 3; i < n; i++) {
		if (toks[i].kind == TOK_EQUALS || toks[i].kind == TOK_SEMICOLON) {
			admin_error(m, SQLSTATE_SYNTAX_ERROR, NULL, "Write SET key = value.",
			            "syntax error at or near \"%s\"", toks[i].text);
			return true;
		}
		if (i > 3 && toks[i].kind != TOK_OTHER && toks[i - 1].kind != TOK_OTHER)
			strncat(value, " ", sizeof(value) - strlen(value) - 1);
		strncat(value, toks[i].text, sizeof(value) - strlen(value) - 1);
	}
	if (n == 3) {
		admin_error(m, SQLSTATE_SYNTAX_ERROR, NULL, "Write SET key = value.", "SET needs a value");
		return true;
	}
	const char *key = toks[1].text;
	if (fake_param(key) >= 0) {
		msg_add_error(m, PqMsg_NoticeResponse, "NOTICE", SQLSTATE_SUCCESSFUL_COMPLETION,
		              NULL, NULL, "SET %s ignored on the admin console", key);
		command_complete(m, "SET");
		return true;
	}
	if (!c->admin_may_control) {
		admin_error(m, SQLSTATE_INSUFFICIENT_PRIVILEGE, NULL,
		            "Only users in admin_users may run it; stats_users may run SHOW.",
		            "permission denied for command \"SET\"");
		return true;
	}
	const struct config_key *k = config_find_key(key);
	if (!k) {
		admin_error(m, SQLSTATE_UNDEFINED_OBJECT, NULL, "SHOW CONFIG lists the keys.",
		            "unrecognized configuration parameter \"%s\"", key);
		return true;
	}
	if (!k->reloadable) {
		admin_error(m, SQLSTATE_CANT_CHANGE_RUNTIME, NULL,
		            "Change it in the configuration file and restart pgsluice.",
		            "parameter \"%s\" cannot be changed without restarting pgsluice", k->name);
		return true;
	}
	if (!sl->hooks.set) {
		admin_error(m, SQLSTATE_FEATURE_NOT_SUPPORTED, NULL, NULL, "SET is not available");
		return true;
	}
	if (!sl->hooks.set(sl, key, value, err, sizeof(err))) {
		/* PgBouncer's text and SQLSTATE, which its scripts and tests match; the reason in the DETAIL */
		admin_error(m, SQLSTATE_PROTOCOL_VIOLATION, err, NULL, "SET failed");
		return true;
	}
	log_info("SET %s = %s on the admin console by %s", k->name, value, c->user);
	command_complete(m, "SET");
	return true;
}

static bool cmd_show(struct client *c, struct msgbuf *m, const struct token *toks, int n)
{
	if (n < 2) {
		admin_error(m, SQLSTATE_SYNTAX_ERROR, NULL, "SHOW HELP lists the commands.", "SHOW needs a name");
		return true;
	}
	if (toks[1].kind != TOK_WORD && toks[1].kind != TOK_QUOTED) {
		admin_error(m, SQLSTATE_SYNTAX_ERROR, NULL, "SHOW HELP lists the commands.",
		            "syntax error at or near \"%s\"", toks[1].text);
		return true;
	}
	const char *what = toks[1].text;
	for (size_t i = 0; i < sizeof(show_commands) / sizeof(show_commands[0]); i++)
		if (strcasecmp(what, show_commands[i].name) == 0) {
			show_commands[i].fn(c, m);
			return true;
		}
	int fp = fake_param(what);
	if (fp >= 0) {
		struct column col = { fake_params[fp].name, TYPE_TEXT };
		struct result r;
		result_begin(&r, m, &col, 1);
		row_begin(&r);
		put_text(&r, fake_params[fp].value);
		row_end(&r);
		command_complete(m, "SHOW");
		return true;
	}
	if (in_word_list(unsupported_shows, what))
		admin_error(m, SQLSTATE_FEATURE_NOT_SUPPORTED, NULL, "SHOW HELP lists the commands.",
		            "SHOW %s is not supported by pgsluice", what);
	else
		admin_error(m, SQLSTATE_SYNTAX_ERROR, NULL, "SHOW HELP lists the commands.",
		            "unrecognized SHOW command \"%s\"", what);
	return true;
}

/*
 * A handler writes its answer into m and returns true, or returns false when
 * the answer comes later (the client then waits in sl->admin).
 */
typedef bool (*cmd_fn)(struct client *c, struct msgbuf *m, const struct token *toks, int n);

static const struct {
	const char *name;
	cmd_fn fn;
	bool control;             /* admin_users only */
	int max_words;            /* words the command takes, itself included */
} commands[] = {
	{ "show", cmd_show, false, 2 },
	{ "set", cmd_set, false, MAX_TOKENS },   /* checks the privilege itself: SET client_encoding is harmless */
	{ "pause", cmd_pause, true, 2 },
	{ "resume", cmd_resume, true, 2 },
	{ "suspend", cmd_suspend, true, 1 },
	{ "kill", cmd_kill, true, 2 },
	{ "kill_client", cmd_kill_client, true, 2 },
	{ "reconnect", cmd_reconnect, true, 2 },
	{ "enable", cmd_enable_disable, true, 2 },
	{ "disable", cmd_enable_disable, true, 2 },
	{ "wait_close", cmd_wait_close, true, 2 },
	{ "reload", cmd_reload, true, 1 },
	{ "shutdown", cmd_shutdown, true, 2 },
	{ "cache", cmd_cache, true, 2 },
};

/* Run one query's text; returns false when the answer (and ReadyForQuery) comes later. */
static bool run_query(struct client *c, const char *text, struct msgbuf *m)
{
	struct token toks[MAX_TOKENS];
	int n = tokenize(text, toks, MAX_TOKENS);
	if (n < 0) {
		admin_error(m, SQLSTATE_SYNTAX_ERROR, NULL, NULL, "unterminated quoted string");
		return true;
	}
	while (n > 0 && n <= MAX_TOKENS && toks[n - 1].kind == TOK_SEMICOLON)
		n--;
	if (n == 0) {
		msg_begin(m, PqMsg_EmptyQueryResponse);
		msg_end(m);
		return true;
	}
	if (n > MAX_TOKENS) {
		admin_error(m, SQLSTATE_SYNTAX_ERROR, NULL, "SHOW HELP lists the commands.", "admin command too long");
		return true;
	}
	for (int i = 0; i < n; i++)
		if (toks[i].kind == TOK_SEMICOLON) {
			admin_error(m, SQLSTATE_SYNTAX_ERROR, NULL, "Send one command per query.",
			            "the admin console runs one command per query");
			return true;
		}
	if (toks[0].kind != TOK_WORD) {
		admin_error(m, SQLSTATE_SYNTAX_ERROR, NULL, "SHOW HELP lists the commands.",
		            "syntax error at or near \"%s\"", toks[0].text);
		return true;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcasecmp(toks[0].text, commands[i].name) != 0)
			continue;
		if (commands[i].control && !c->admin_may_control) {
			admin_error(m, SQLSTATE_INSUFFICIENT_PRIVILEGE, NULL,
			            "Only users in admin_users may run it; stats_users may run SHOW.",
			            "permission denied for command \"%s\"", commands[i].name);
			return true;
		}
		if (n > commands[i].max_words) {
			admin_error(m, SQLSTATE_SYNTAX_ERROR, NULL, "SHOW HELP lists the commands.",
			            "syntax error at or near \"%s\"", toks[commands[i].max_words].text);
			return true;
		}
		return commands[i].fn(c, m, toks, n);
	}
	if (in_word_list(unsupported_commands, toks[0].text))
		admin_error(m, SQLSTATE_FEATURE_NOT_SUPPORTED, NULL, "SHOW HELP lists the commands.",
		            "%s is not supported by pgsluice", toks[0].text);
	else
		admin_error(m, SQLSTATE_SYNTAX_ERROR, NULL, "SHOW HELP lists the commands.",
		            "syntax error at or near \"%s\"", toks[0].text);
	return true;
}

/* ---- sessions ---- */

static void admin_login(struct client *c)
{
	struct sluice *sl = c->sl;
	const struct sluice_config *cfg = sl->cfg;
	bool may_control = str_list_contains(cfg->admin_users, c->user) || client_is_console_owner(c);
	bool may_show = may_control || str_list_contains(cfg->stats_users, c->user) ||
	                cfg->auth_type == AUTH_TYPE_ANY;
	if (!may_show) {
		client_fatal(c, SQLSTATE_INSUFFICIENT_PRIVILEGE, NULL,
		             "Add the user to admin_users or stats_users in the pgsluice configuration.",
		             "user \"%s\" is not allowed to use the admin console", c->user);
		return;
	}
	pool_move_client(c, NULL, CL_ADMIN);
	c->admin_may_control = may_control;
	c->admin_skip_to_sync = false;
	RAND_bytes((unsigned char *)&c->cancel_pid, sizeof(c->cancel_pid));
	RAND_bytes((unsigned char *)&c->cancel_key, sizeof(c->cancel_key));
	if (cfg->log_connections)
		log_info("C-%llu: %s/%s@%s:%d login to the admin console (%s)", (unsigned long long)c->id,
		         c->database, c->user, CLIENT_ADDR(c), client_port(c), may_control ? "admin" : "stats");

	struct msgbuf m;
	msg_init(&m);
	msg_begin(&m, PqMsg_AuthenticationRequest);
	msg_add_int32(&m, AUTH_REQ_OK);
	msg_end(&m);
	msg_add_parameter_status(&m, "server_version", PACKAGE_VERSION "/pgsluice");
	msg_add_parameter_status(&m, "server_encoding", "UTF8");
	msg_add_parameter_status(&m, "client_encoding", "UTF8");
	msg_add_parameter_status(&m, "DateStyle", "ISO, MDY");
	msg_add_parameter_status(&m, "TimeZone", "UTC");
	msg_add_parameter_status(&m, "IntervalStyle", "postgres");
	msg_add_parameter_status(&m, "integer_datetimes", "on");
	msg_add_parameter_status(&m, "standard_conforming_strings", "on");
	msg_add_parameter_status(&m, "is_superuser", "off");
	msg_add_parameter_status(&m, "application_name", application_name(&c->vars));
	/* As PgBouncer 1.25 tells console clients: its version, and the console's
	 * own pooling (statement mode, no prepared statements), whatever the ini says. */
	msg_add_parameter_status(&m, "pgbouncer.version", PACKAGE_VERSION);
	msg_add_parameter_status(&m, "pgbouncer.max_prepared_statements", "0");
	msg_add_parameter_status(&m, "pgbouncer.pool_mode", "statement");
	msg_begin(&m, PqMsg_BackendKeyData);
	msg_add_int32(&m, c->cancel_pid);
	msg_add_int32(&m, c->cancel_key);
	msg_end(&m);
	send_answer(c, &m, true);
	msg_free(&m);
	connio_resume_read(&c->io);
	if (iobuf_len(&c->io.in) > 0)
		admin_input(c);
}

/* One whole message of console session c, consumed from its input. */
static void admin_message(struct client *c, uint8_t type, const char *body, size_t len)
{
	struct msgbuf m;
	msg_init(&m);
	switch (type) {
	case PqMsg_Query: {
		if (c->admin_skip_to_sync)
			break;   /* discarded until Sync, as PostgreSQL does after an error */
		if (len == 0 || body[len - 1] != '\0') {
			msg_free(&m);
			client_fatal(c, SQLSTATE_PROTOCOL_VIOLATION, NULL, NULL, "invalid query message");
			return;
		}
		bool done = run_query(c, body, &m);
		if (c->state != CL_ADMIN) {     /* KILL_CLIENT of itself, or KILL of everything */
			msg_free(&m);
			return;
		}
		send_answer(c, &m, done);
		break;
	}
	case PqMsg_Sync:
		c->admin_skip_to_sync = false;
		send_answer(c, &m, true);
		break;
	case PqMsg_Parse:
	case PqMsg_Bind:
	case PqMsg_Describe:
	case PqMsg_Execute:
	case PqMsg_Close:
	case PqMsg_Flush:
		if (!c->admin_skip_to_sync) {
			admin_error(&m, SQLSTATE_PROTOCOL_VIOLATION, NULL,
			            "Use the simple query protocol (psql; psycopg's ClientCursor).",
			            "the admin console accepts the simple query protocol only");
			c->admin_skip_to_sync = true;
			send_answer(c, &m, false);
		}
		break;
	case PqMsg_FunctionCall:
		admin_error(&m, SQLSTATE_PROTOCOL_VIOLATION, NULL, NULL,
		            "the admin console accepts the simple query protocol only");
		send_answer(c, &m, true);
		break;
	case PqMsg_CopyData:
	case PqMsg_CopyDone:
	case PqMsg_CopyFail:
		break;   /* no COPY is ever started: ignored, as PostgreSQL does */
	default:
		msg_free(&m);
		client_fatal(c, SQLSTATE_PROTOCOL_VIOLATION, NULL, NULL, "invalid frontend message type %d", type);
		return;
	}
	msg_free(&m);
}

static void admin_input(struct client *c)
{
	struct sluice *sl = c->sl;
	struct iobuf *in = &c->io.in;
	while (c->state == CL_ADMIN) {
		/* Bound memory: a session that waits, or does not read its answers, is not read. */
		if ((sl->admin && client_waits(sl->admin, c)) ||
		    connio_out_len(&c->io) >= RELAY_HIGH_WATER) {
			connio_pause_read(&c->io);
			return;   /* the wait's end or the client's drain resumes */
		}
		connio_resume_read(&c->io);
		uint8_t type;
		uint32_t len;
		if (!proto_peek_header(in, &type, &len))
			return;
		if (len < 4 || len > MAX_ADMIN_QUERY) {
			client_fatal(c, SQLSTATE_PROTOCOL_VIOLATION, NULL, NULL,
			             "invalid message length %u for message type \"%c\"", len, type);
			return;
		}
		if (iobuf_len(in) < 1 + (size_t)len)
			return;
		if (type == PqMsg_Terminate) {
			client_close(c, "client close request");
			return;
		}
		c->last_activity = now_usec();
		char *body = malloc(len - 4 + 1);
		if (!body) {
			client_fatal(c, SQLSTATE_INTERNAL_ERROR, NULL, NULL, "out of memory");
			return;
		}
		memcpy(body, iobuf_data(in) + PROTO_HEADER_LEN, len - 4);
		iobuf_drain(in, 1 + (size_t)len);
		body[len - 4] = '\0';
		admin_message(c, type, body, len - 4);
		free(body);
	}
}

static void admin_forget(struct client *c)
{
	struct admin *a = c->sl->admin;
	for (size_t i = 0; a && i < a->n_waits;) {
		if (a->waits[i].c == c)
			remove_wait(a, i);
		else
			i++;
	}
}

bool admin_start(struct sluice *sl)
{
	struct admin *a = calloc(1, sizeof(*a));
	if (!a)
		return false;
	a->sl = sl;
	a->timer = evtimer_new(sl->base, check_waits, a);
	if (!a->timer) {
		free(a);
		return false;
	}
	sl->admin = a;
	static const struct sluice_console console = {
		.login = admin_login, .input = admin_input, .forget = admin_forget,
	};
	sl->console = &console;
	return true;
}

void admin_stop(struct sluice *sl)
{
	while (!TAILQ_EMPTY(&sl->admin_clients))
		client_close(TAILQ_FIRST(&sl->admin_clients), "pgsluice shutting down");
	struct admin *a = sl->admin;
	if (a) {
		while (a->n_waits > 0)
			remove_wait(a, 0);
		free(a->waits);
		event_free(a->timer);
		free(a);
		sl->admin = NULL;
	}
	sl->console = NULL;
	clear_paused_dbs(sl);
	name_list_free(&sl->disabled_dbs);
}
