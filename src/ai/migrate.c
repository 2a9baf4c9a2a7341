/* SPDX-License-Identifier: PostgreSQL */
/*
 * migrate.c - apply the sql/ migrations of the sluice schema and check at
 * start that none is missing; see migrate.h. Blocking libpq, one connection
 * per call.
 */
#include "ai/migrate.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <libpq-fe.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "target.h"

/* pg_advisory_xact_lock key serializing migration runs: "sluice\0\1" */
#define MIGRATION_LOCK_KEY "8317151707346042881"
/* How long a migration waits for a table lock before it gives up (lock_timeout). */
#define MIGRATION_LOCK_TIMEOUT "10s"
#define CHECK_CONNECT_TIMEOUT_S 5
#define CHECK_STATEMENT_TIMEOUT "5s"
#define MAX_MIGRATION_BYTES (16 * 1024 * 1024)
#define MAX_VERSION 999999999

/* One sql/NNNN_name.sql file. */
struct migration {
	int version;
	char *name;    /* file name without ".sql": "0001_sluice_schema" */
	char *path;    /* sqldir/file */
};

struct migration_list {
	struct migration *items;  /* sorted by version */
	size_t n;
};

/* An error as the command line prints it: "error", then optional detail and hint. */
struct failure {
	char message[1024];
	char detail[2048];
	char hint[512];
};

__attribute__((format(printf, 2, 3)))
static void fail(struct failure *f, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(f->message, sizeof(f->message), fmt, ap);
	va_end(ap);
	f->detail[0] = f->hint[0] = '\0';
}

static void print_failure(const struct failure *f)
{
	fprintf(stderr, "pgsluice: error: %s\n", f->message);
	if (f->detail[0])
		fprintf(stderr, "pgsluice: detail: %s\n", f->detail);
	if (f->hint[0])
		fprintf(stderr, "pgsluice: hint: %s\n", f->hint);
}

/* libpq's messages end in a newline and may span lines; make them one line. */
static const char *one_line(const char *text, char *buf, size_t len)
{
	size_t n = 0;
	bool space = false;
	for (const char *p = text ? text : ""; *p && n + 1 < len; p++) {
		if (*p == '\n' || *p == '\r' || *p == '\t') {
			space = n > 0;
			continue;
		}
		if (space && n + 2 < len)
			buf[n++] = ' ';
		space = false;
		buf[n++] = *p;
	}
	buf[n] = '\0';
	return buf;
}

/* ---- the migrations directory ---- */

static void free_migrations(struct migration_list *list)
{
	for (size_t i = 0; i < list->n; i++) {
		free(list->items[i].name);
		free(list->items[i].path);
	}
	free(list->items);
	list->items = NULL;
	list->n = 0;
}

static int compare_versions(const void *a, const void *b)
{
	const struct migration *x = a, *y = b;
	return (x->version > y->version) - (x->version < y->version);
}

/* "NNNN_name.sql" -> version; false when file is not named so. */
static bool parse_file_name(const char *file, int *version)
{
	const char *p = file;
	long v = 0;
	if (!isdigit((unsigned char)*p))
		return false;
	for (; isdigit((unsigned char)*p); p++) {
		v = v * 10 + (*p - '0');
		if (v > MAX_VERSION)
			return false;
	}
	if (*p++ != '_' || v == 0)
		return false;
	const char *name = p;
	for (; isalnum((unsigned char)*p) || *p == '_' || *p == '-'; p++)
		;
	if (p == name || strcmp(p, ".sql") != 0)
		return false;
	*version = (int)v;
	return true;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);
	return n >= m && strcmp(s + n - m, suffix) == 0;
}

static bool load_migrations(const char *sqldir, struct migration_list *list, struct failure *f)
{
	DIR *dir = opendir(sqldir);
	struct dirent *de;
	size_t cap = 0;

	list->items = NULL;
	list->n = 0;
	if (!dir) {
		fail(f, "could not open migration directory \"%s\": %s", sqldir, strerror(errno));
		snprintf(f->hint, sizeof(f->hint), "Set PGSLUICE_SQLDIR to the directory holding "
		         "pgsluice's NNNN_name.sql files.");
		return false;
	}
	while ((de = readdir(dir)) != NULL) {
		int version;
		if (de->d_name[0] == '.' || !ends_with(de->d_name, ".sql"))
			continue;
		if (!parse_file_name(de->d_name, &version)) {
			fail(f, "file \"%s\" in migration directory \"%s\" is not named NNNN_name.sql",
			     de->d_name, sqldir);
			snprintf(f->hint, sizeof(f->hint), "Rename it (version number, '_', a name of "
			         "letters, digits, '_' or '-') or move it out of the directory.");
			goto bad;
		}
		if (list->n == cap) {
			cap = cap ? cap * 2 : 8;
			struct migration *grown = realloc(list->items, cap * sizeof(*grown));
			if (!grown)
				goto oom;
			list->items = grown;
		}
		struct migration *m = &list->items[list->n];
		m->version = version;
		m->name = strndup(de->d_name, strlen(de->d_name) - 4);
		if (!m->name)
			goto oom;
		if (asprintf(&m->path, "%s/%s", sqldir, de->d_name) < 0) {
			free(m->name);
			goto oom;
		}
		list->n++;
	}
	closedir(dir);
	dir = NULL;
	if (list->n == 0) {
		fail(f, "no migrations in \"%s\"", sqldir);
		snprintf(f->hint, sizeof(f->hint), "Set PGSLUICE_SQLDIR to the directory holding "
		         "pgsluice's NNNN_name.sql files.");
		return false;
	}
	qsort(list->items, list->n, sizeof(list->items[0]), compare_versions);
	for (size_t i = 1; i < list->n; i++) {
		if (list->items[i].version == list->items[i - 1].version) {
			fail(f, "migrations \"%s\" and \"%s\" in \"%s\" have the same version %d",
			     list->items[i - 1].name, list->items[i].name, sqldir, list->items[i].version);
			goto bad;
		}
	}
	return true;
oom:
	fail(f, "out of memory");
bad:
	if (dir)
		closedir(dir);
	free_migrations(list);
	return false;
}

/* The whole file, NUL-terminated (free it); NULL with f set. */
static char *read_migration(const struct migration *m, struct failure *f)
{
	FILE *file = fopen(m->path, "rb");
	if (!file) {
		fail(f, "could not open migration \"%s\": %s", m->path, strerror(errno));
		return NULL;
	}
	char *text = malloc(MAX_MIGRATION_BYTES + 1);
	size_t n = text ? fread(text, 1, MAX_MIGRATION_BYTES + 1, file) : 0;
	bool error = ferror(file);
	fclose(file);
	if (!text) {
		fail(f, "out of memory");
	} else if (error) {
		fail(f, "could not read migration \"%s\"", m->path);
	} else if (n > MAX_MIGRATION_BYTES) {
		fail(f, "migration \"%s\" is larger than %d bytes", m->path, MAX_MIGRATION_BYTES);
	} else if (memchr(text, '\0', n)) {
		fail(f, "migration \"%s\" contains a NUL byte", m->path);
	} else {
		text[n] = '\0';
		return text;
	}
	free(text);
	return NULL;
}

/* ---- connecting ---- */

/* ai_database's entry as pgsluice's own connections reach it (target.h), with hints for --migrate. */
static bool resolve_target(const struct sluice_config *cfg, const struct userlist *users,
                           const char *application_name, int connect_timeout_s,
                           struct db_target *t, struct failure *f)
{
	memset(t, 0, sizeof(*t));
	t->entry = cfg->ai_database;
	if (!t->entry || !t->entry[0]) {
		fail(f, "ai_database is not set: set it to the [databases] entry that holds the sluice schema");
		snprintf(f->hint, sizeof(f->hint), "Add \"ai_database = app\" to [pgsluice] in %s, "
		         "where app is a name in its [databases] section.", cfg->config_file);
		return false;
	}
	if (!config_find_db(cfg, t->entry)) {
		fail(f, "ai_database \"%s\" is not an entry of the [databases] section", t->entry);
		snprintf(f->hint, sizeof(f->hint), "Set ai_database to one of the names in [databases] "
		         "of %s.", cfg->config_file);
		return false;
	}
	return db_target_resolve(cfg, users, "ai_database", cfg->ai_database, NULL, application_name,
	                         connect_timeout_s, NULL, t, f->message, sizeof(f->message));
}

bool ai_db_target_resolve(const struct sluice_config *cfg, const struct userlist *users,
                          const char *application_name, int connect_timeout_s,
                          struct db_target *t, char *errbuf, size_t errlen)
{
	struct failure f = { { 0 }, { 0 }, { 0 } };
	if (!resolve_target(cfg, users, application_name, connect_timeout_s, t, &f)) {
		snprintf(errbuf, errlen, "%s", f.message);
		return false;
	}
	return true;
}

static void ignore_notice(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

/* Server WARNINGs during a migration are worth showing; NOTICEs are turned off. */
static void print_notice(void *arg, const char *message)
{
	char line[2048];
	fprintf((FILE *)arg, "pgsluice: %s\n", one_line(message, line, sizeof(line)));
}

static PGconn *connect_target(struct db_target *t, struct failure *f)
{
	PGconn *conn = PQconnectdbParams(t->keys, t->values, 0);
	if (conn && PQstatus(conn) == CONNECTION_OK)
		return conn;
	char why[1024];
	fail(f, "could not connect to ai_database \"%s\" (database \"%s\" as user \"%s\"): %s",
	     t->entry, t->dbname, t->user,
	     conn ? one_line(PQerrorMessage(conn), why, sizeof(why)) : "out of memory");
	if (t->hashed_password)
		snprintf(f->hint, sizeof(f->hint), "auth_file holds only a hash of \"%s\"'s password, "
		         "which cannot log in: add password=... to the [databases] entry \"%s\", or "
		         "set PGPASSWORD or ~/.pgpass.", t->user, t->entry);
	PQfinish(conn);
	return NULL;
}

/* ---- running SQL ---- */

/* 1-based line of the character at 1-based position pos (characters, UTF-8) in text. */
static int line_of_position(const char *text, long pos)
{
	int line = 1;
	long chars = 0;
	for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
		if ((*p & 0xC0) == 0x80)
			continue;
		if (++chars >= pos)
			break;
		if (*p == '\n')
			line++;
	}
	return line;
}

/* Fill f from a failed result: the server's message, SQLSTATE, where, detail, hint. */
static void fail_from_result(struct failure *f, const PGresult *res, PGconn *conn,
                             const char *what, const struct migration *m, const char *sql)
{
	char buf[1024];
	const char *primary = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
	const char *sqlstate = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	if (!primary)
		primary = one_line(res ? PQresultErrorMessage(res) : PQerrorMessage(conn), buf, sizeof(buf));
	if (sqlstate)
		fail(f, "%s: %s (SQLSTATE %s)", what, primary, sqlstate);
	else
		fail(f, "%s: %s", what, primary);
	if (!res)
		return;

	size_t used = 0;
	const char *position = PQresultErrorField(res, PG_DIAG_STATEMENT_POSITION);
	const char *detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL);
	const char *context = PQresultErrorField(res, PG_DIAG_CONTEXT);
	const char *hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT);
	if (m && sql && position)
		used += (size_t)snprintf(f->detail + used, sizeof(f->detail) - used, "At line %d of %s.",
		                         line_of_position(sql, atol(position)), m->path);
	if (detail && used < sizeof(f->detail))
		used += (size_t)snprintf(f->detail + used, sizeof(f->detail) - used, "%s%s",
		                         used ? " " : "", one_line(detail, buf, sizeof(buf)));
	if (context && used < sizeof(f->detail))
		snprintf(f->detail + used, sizeof(f->detail) - used, "%sContext: %s",
		         used ? " " : "", one_line(context, buf, sizeof(buf)));
	if (hint)
		snprintf(f->hint, sizeof(f->hint), "%s", one_line(hint, buf, sizeof(buf)));
	else if (sqlstate && strcmp(sqlstate, "55P03") == 0)
		snprintf(f->hint, sizeof(f->hint), "Another session holds a lock on a table this "
		         "migration changes (a long query on sluice.llm_usage?); run pgsluice --migrate "
		         "again when it is done.");
}

/* Run sql with text parameters; returns the result if its status is ok, else NULL with f set. */
static PGresult *run_sql(PGconn *conn, const char *sql, int nparams, const char *const *params,
                         const char *what, struct failure *f)
{
	PGresult *res = PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0);
	ExecStatusType st = PQresultStatus(res);
	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
		return res;
	fail_from_result(f, res, conn, what, NULL, NULL);
	PQclear(res);
	return NULL;
}

static bool run_command(PGconn *conn, const char *sql, const char *what, struct failure *f)
{
	PGresult *res = run_sql(conn, sql, 0, NULL, what, f);
	PQclear(res);
	return res != NULL;
}

/* Versions recorded in sluice.schema_migrations, ascending (free *out); *n = 0 when
 * the table does not exist. *exists says whether it does. */
static bool recorded_versions(PGconn *conn, int **out, size_t *n, bool *exists, struct failure *f)
{
	*out = NULL;
	*n = 0;
	PGresult *res = run_sql(conn, "SELECT to_regclass('sluice.schema_migrations') IS NOT NULL",
	                        0, NULL, "could not read the sluice schema's version", f);
	if (!res)
		return false;
	*exists = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	if (!*exists)
		return true;
	res = run_sql(conn, "SELECT version FROM sluice.schema_migrations ORDER BY version", 0, NULL,
	              "could not read sluice.schema_migrations", f);
	if (!res)
		return false;
	size_t rows = (size_t)PQntuples(res);
	*out = malloc((rows ? rows : 1) * sizeof(int));
	if (!*out) {
		PQclear(res);
		fail(f, "out of memory");
		return false;
	}
	for (size_t i = 0; i < rows; i++)
		(*out)[i] = atoi(PQgetvalue(res, (int)i, 0));
	*n = rows;
	PQclear(res);
	return true;
}

static bool version_in(const int *versions, size_t n, int version)
{
	for (size_t i = 0; i < n; i++)
		if (versions[i] == version)
			return true;
	return false;
}

static const struct migration *find_migration(const struct migration_list *list, int version)
{
	for (size_t i = 0; i < list->n; i++)
		if (list->items[i].version == version)
			return &list->items[i];
	return NULL;
}

enum apply_result { APPLY_DONE, APPLY_SKIPPED, APPLY_FAILED };

/*
 * Apply m in one transaction: lock, skip when recorded, run the file,
 * record it, commit. On failure the transaction is rolled back.
 */
static enum apply_result apply_migration(PGconn *conn, const struct migration *m,
                                         struct failure *f)
{
	char what[256], version[16];
	const char *params[2] = { version, m->name };
	char *sql = NULL;
	PGresult *res = NULL;

	snprintf(version, sizeof(version), "%d", m->version);
	snprintf(what, sizeof(what), "migration %s failed", m->name);
	if (!run_command(conn, "BEGIN", what, f) ||
	    !run_command(conn, "SELECT pg_advisory_xact_lock(" MIGRATION_LOCK_KEY ")", what, f) ||
	    !run_command(conn, "SET LOCAL lock_timeout = '" MIGRATION_LOCK_TIMEOUT "'", what, f))
		goto failed;
	/* read under the lock: a concurrent run may just have applied it */
	if (!(res = run_sql(conn, "SELECT to_regclass('sluice.schema_migrations') IS NOT NULL",
	                    0, NULL, what, f)))
		goto failed;
	bool table_exists = strcmp(PQgetvalue(res, 0, 0), "t") == 0;
	PQclear(res);
	if (table_exists) {
		if (!(res = run_sql(conn, "SELECT 1 FROM sluice.schema_migrations WHERE version = $1",
		                    1, params, what, f)))
			goto failed;
		bool recorded = PQntuples(res) > 0;
		PQclear(res);
		if (recorded)
			return run_command(conn, "ROLLBACK", what, f) ? APPLY_SKIPPED : APPLY_FAILED;
	}

	if (!(sql = read_migration(m, f)))
		goto failed;
	/* simple protocol: a file holds many statements (or only comments) */
	res = PQexec(conn, sql);
	ExecStatusType st = PQresultStatus(res);
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_EMPTY_QUERY) {
		fail_from_result(f, res, conn, what, m, sql);
		PQclear(res);
		goto failed;
	}
	PQclear(res);
	if (PQtransactionStatus(conn) != PQTRANS_INTRANS) {
		fail(f, "migration %s ended its transaction itself", m->name);
		snprintf(f->detail, sizeof(f->detail), "What it did before its COMMIT or ROLLBACK "
		         "may be in the database, and it is not recorded in sluice.schema_migrations.");
		snprintf(f->hint, sizeof(f->hint), "Remove BEGIN, COMMIT and ROLLBACK from %s: "
		         "pgsluice --migrate runs each migration in a transaction of its own.", m->path);
		goto failed;
	}
	free(sql);
	sql = NULL;
	if (!(res = run_sql(conn, "INSERT INTO sluice.schema_migrations (version, name) VALUES ($1, $2)",
	                    2, params, what, f)))
		goto failed;
	PQclear(res);
	if (!run_command(conn, "COMMIT", what, f))
		goto failed;
	return APPLY_DONE;

failed:
	free(sql);
	if (PQtransactionStatus(conn) != PQTRANS_IDLE)
		PQclear(PQexec(conn, "ROLLBACK"));
	return APPLY_FAILED;
}

static int64_t elapsed_ms(const struct timespec *since)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return (int64_t)(now.tv_sec - since->tv_sec) * 1000 + (now.tv_nsec - since->tv_nsec) / 1000000;
}

/* After a run: the version reached, and versions recorded that sqldir does not have. */
static bool report_version(PGconn *conn, const struct migration_list *list, const struct db_target *t,
                           FILE *out, struct failure *f)
{
	int *versions;
	size_t n;
	bool exists;
	if (!recorded_versions(conn, &versions, &n, &exists, f))
		return false;
	for (size_t i = 0; i < n; i++) {
		if (!find_migration(list, versions[i]))
			fprintf(out, "pgsluice: note: version %d is recorded in sluice.schema_migrations but has "
			        "no file in the migration directory (applied by a newer pgsluice?)\n", versions[i]);
	}
	fprintf(out, "sluice schema in database \"%s\" (ai_database \"%s\") is at version %d\n",
	        t->dbname, t->entry, n ? versions[n - 1] : 0);
	free(versions);
	return true;
}

int migrate_run(const struct sluice_config *cfg, const struct userlist *users, const char *sqldir,
                FILE *out)
{
	struct failure f;
	struct migration_list list;
	struct db_target t;
	PGconn *conn = NULL;
	int rc = 1;

	/* connect_timeout as for server connections; libpq counts whole seconds (0: wait forever) */
	int timeout_s = (int)((cfg->server_connect_timeout + USEC_PER_SEC - 1) / USEC_PER_SEC);
	if (cfg->server_connect_timeout > (usec_t)INT_MAX * USEC_PER_SEC)
		timeout_s = 0;
	if (!resolve_target(cfg, users, "pgsluice-migrate", timeout_s, &t, &f)) {
		print_failure(&f);
		return 1;
	}
	if (!load_migrations(sqldir, &list, &f)) {
		print_failure(&f);
		return 1;
	}
	if (!(conn = connect_target(&t, &f)))
		goto done;
	PQsetNoticeProcessor(conn, print_notice, out);
	if (!run_command(conn, "SET client_min_messages = warning", "could not set up the session", &f))
		goto done;
	for (size_t i = 0; i < list.n; i++) {
		const struct migration *m = &list.items[i];
		struct timespec start;
		clock_gettime(CLOCK_MONOTONIC, &start);
		switch (apply_migration(conn, m, &f)) {
		case APPLY_DONE:
			fprintf(out, "migration %s: applied (%lld ms)\n", m->name, (long long)elapsed_ms(&start));
			break;
		case APPLY_SKIPPED:
			fprintf(out, "migration %s: already applied, skipped\n", m->name);
			break;
		case APPLY_FAILED:
			fprintf(out, "migration %s: failed, rolled back%s\n", m->name,
			        i > 0 ? " (the migrations before it stay applied)" : "");
			goto done;
		}
		fflush(out);
	}
	if (report_version(conn, &list, &t, out, &f))
		rc = 0;
done:
	if (rc != 0)
		print_failure(&f);
	fflush(out);
	PQfinish(conn);
	free_migrations(&list);
	return rc;
}

/* "pgsluice --migrate /abs/path/pgsluice.ini" for messages. */
static void migrate_command(const struct sluice_config *cfg, char *buf, size_t len)
{
	char *abs = realpath(cfg->config_file, NULL);
	snprintf(buf, len, "pgsluice --migrate %s", abs ? abs : cfg->config_file);
	free(abs);
}

int migrate_check(const struct sluice_config *cfg, const struct userlist *users, const char *sqldir,
                  char *msg, size_t msglen)
{
	struct failure f;
	struct migration_list list = { 0 };
	struct db_target t;
	PGconn *conn = NULL;
	int *versions = NULL;
	size_t n_versions = 0;
	bool exists = false;
	int rc = MIGRATE_UNCHECKED;
	char command[PATH_MAX + 64];

	if (msglen == 0)
		msg = NULL;
	if (!resolve_target(cfg, users, "pgsluice-migrate", CHECK_CONNECT_TIMEOUT_S, &t, &f) ||
	    !load_migrations(sqldir, &list, &f) ||
	    !(conn = connect_target(&t, &f)))
		goto unchecked;
	PQsetNoticeProcessor(conn, ignore_notice, NULL);
	/* pgsluice's start waits for this: never for long (a migration holding a lock?) */
	if (!run_command(conn, "SET statement_timeout = '" CHECK_STATEMENT_TIMEOUT "'",
	                 "could not set up the session", &f) ||
	    !recorded_versions(conn, &versions, &n_versions, &exists, &f))
		goto unchecked;

	migrate_command(cfg, command, sizeof(command));
	size_t missing = 0;
	const struct migration *first_missing = NULL;
	for (size_t i = 0; i < list.n; i++) {
		if (!version_in(versions, n_versions, list.items[i].version)) {
			if (!first_missing)
				first_missing = &list.items[i];
			missing++;
		}
	}
	if (!exists) {
		rc = MIGRATE_BEHIND;
		if (msg)
			snprintf(msg, msglen, "the sluice schema is not installed in database \"%s\" "
			         "(ai_database \"%s\"); run \"%s\"", t.dbname, t.entry, command);
	} else if (missing > 0) {
		rc = MIGRATE_BEHIND;
		if (msg)
			snprintf(msg, msglen, "the sluice schema in database \"%s\" (ai_database \"%s\") is "
			         "behind: %s%s not applied; run \"%s\"", t.dbname, t.entry,
			         first_missing->name, missing == 1 ? " is" : " and later migrations are",
			         command);
	} else {
		rc = MIGRATE_CURRENT;
		if (msg)
			snprintf(msg, msglen, "the sluice schema in database \"%s\" (ai_database \"%s\") is "
			         "at version %d", t.dbname, t.entry, n_versions ? versions[n_versions - 1] : 0);
	}
	goto done;

unchecked:
	if (msg)
		snprintf(msg, msglen, "could not check the sluice schema: %s%s%s%s", f.message,
		         f.hint[0] ? " (" : "", f.hint, f.hint[0] ? ")" : "");
done:
	free(versions);
	PQfinish(conn);
	free_migrations(&list);
	return rc;
}

/* ---- where the migrations are ---- */

static bool is_directory(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

const char *migrate_sqldir(char *buf, size_t len)
{
#ifdef SQLDIR
	const char *installed = SQLDIR;
#else
	const char *installed = "/usr/local/share/pgsluice/sql";
#endif
	const char *env = getenv("PGSLUICE_SQLDIR");
	if (env && env[0]) {
		snprintf(buf, len, "%s", env);
		return buf;
	}
	if (is_directory(installed)) {
		snprintf(buf, len, "%s", installed);
		return buf;
	}
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = '\0';
		char *slash = strrchr(exe, '/');
		if (slash) {
			*slash = '\0';
			/* a build directory inside the checkout (build/pgsluice), or the checkout itself */
			static const char *const relative[] = { "/../sql", "/sql" };
			for (size_t i = 0; i < 2; i++) {
				char candidate[PATH_MAX + 16], resolved[PATH_MAX];
				snprintf(candidate, sizeof(candidate), "%s%s", exe, relative[i]);
				if (is_directory(candidate) && realpath(candidate, resolved)) {
					snprintf(buf, len, "%s", resolved);
					return buf;
				}
			}
		}
	}
	snprintf(buf, len, "%s", installed);
	return buf;
}
