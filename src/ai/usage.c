/* SPDX-License-Identifier: PostgreSQL */
/*
 * usage.c - see usage.h and src/ai/README.md (how exactly-once holds).
 * The writer ships one sealed journal segment per INSERT (again with ON
 * CONFLICT (id, created_at) DO NOTHING when PostgreSQL already holds some of
 * its records), and releases the segment only after the commit.
 */
#include "ai/usage.h"
#include "ai/stats.h"

#include <event2/event.h>
#include <math.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ai/journal.h"
#include "ai/limits.h"
#include "ai/limits_sync.h"
#include "ai/migrate.h"
#include "ai/tags.h"
#include "ai/context.h"
#include "log.h"
#include "pgerror.h"
#include "sidechan.h"
#include "sluice.h"
#include "sqltext.h"
#include "util.h"

/* A journal larger than this gets a warning: PostgreSQL has been away a while. */
#define BACKLOG_WARN_BYTES (64ull * 1024 * 1024)

/* The text fields of a record, in the order of the shipment's columns and of the journal's encoding. */
enum { T_SUBJECT, T_USER, T_DB, T_MODEL, T_CONV, T_TRACE, T_INST, N_TEXTS };
_Static_assert(N_TEXTS == JOURNAL_TEXT_FIELDS, "the journal's text fields are T_*, in that order");

struct usage_pending {
	struct usage_record rec;
	uint16_t text_len[N_TEXTS];    /* strnlen of rec's text fields, measured once when copied */
	usec_t start;                  /* monotonic, when the statement went out */
	struct sluice *sl;
	bool record;                   /* journal rec at commit; false: only the reservation rides here */
	struct limit_reservation resv; /* what admission reserved on the limits (docs/limits.md) */
	struct usage_pending *next;    /* in u->spare */
};

/* Ended pendings kept for the next statements: malloc, zeroing and free cost ~400 Ir a record. */
#define SPARE_PENDINGS 16

struct model_price { char *model; double input_usd_per_mtok, output_usd_per_mtok; };

struct usage {
	struct sluice *sl;
	struct journal *journal;
	struct sidechan *sc;
	struct event *flush_ev, *sync_ev, *drain_ev;
	char instance[160];
	uint16_t instance_len;
	bool shipping;
	uint64_t shipping_segment;
	/*
	 * A segment stored in parts after PostgreSQL refused one of its records
	 * (split_*: records [0, split_done) of split_segment are stored, the next
	 * INSERT tries [split_done, split_end)); the range in flight.
	 */
	uint64_t split_segment;
	size_t split_done, split_end;
	uint64_t dedup_segment;        /* has records PostgreSQL holds: SHIP_DEDUP_SQL; 0: none */
	size_t ship_lo, ship_hi, ship_total;
	struct usage_record rejected;  /* record ship_lo: moved to sluice.usage_rejects when refused alone */
	struct pg_error reject;        /* and why PostgreSQL refused it (sqlstate, message) */
	uint64_t appended_since_seal;
	struct batch *batches, *batches_tail;  /* segments' shipments built as appended, oldest first */
	size_t batch_bytes;
	uint64_t file_only_segment;    /* a segment whose batch was dropped: read from its file */
	struct batch *spare_batch;     /* a shipped batch whose buffers the next one reuses */
	struct usage_pending *spare;   /* SPARE_PENDINGS at most */
	int n_spare;
	struct model_price *prices;
	size_t n_prices;
	size_t price_hint;             /* the prices[] price_cents found last: a run of statements names one model */
	bool prices_read;              /* sluice.model_prices read at least once */
	bool prices_running, prices_warned;
	bool replay_charged;           /* records of an earlier run charged to their budgets */
	int flushes_since_prices;
	bool backlog_warned;
	usec_t append_failed_at;       /* monotonic; 0: the last append worked */
	usec_t last_maintenance;       /* monotonic, partitions made / dropped */
	void (*drain_done)(struct sluice *sl);
};

/* ---- prices ---- */

static const char PRICES_SQL[] =
	"SELECT model, input_usd_per_mtok::float8, output_usd_per_mtok::float8 FROM sluice.model_prices";

static void charge_replayed(void *arg, uint64_t segment, const struct usage_record *r);

static void prices_loaded(void *arg, const PGresult *res)
{
	struct usage *u = arg;
	u->prices_running = false;
	if (!res || PQresultStatus(res) != PGRES_TUPLES_OK) {
		if (res && !u->prices_warned)    /* retried every flush until it works: said once */
			log_warning("usage: reading sluice.model_prices failed: %s", PQresultErrorMessage(res));
		u->prices_warned = res != NULL;
		return;
	}
	u->prices_warned = false;
	for (size_t i = 0; i < u->n_prices; i++)
		free(u->prices[i].model);
	free(u->prices);
	u->n_prices = 0;
	u->prices = calloc((size_t)PQntuples(res) + 1, sizeof(*u->prices));
	for (int i = 0; u->prices && i < PQntuples(res); i++) {
		u->prices[u->n_prices].model = strdup(PQgetvalue(res, i, 0));
		u->prices[u->n_prices].input_usd_per_mtok = atof(PQgetvalue(res, i, 1));
		u->prices[u->n_prices].output_usd_per_mtok = atof(PQgetvalue(res, i, 2));
		if (u->prices[u->n_prices].model)
			u->n_prices++;
	}
	u->prices_read = true;
	if (!u->replay_charged) {
		/* Once, now that they can be priced: records an earlier run journaled
		 * but did not store. The budgets' seed from sluice.llm_usage does not
		 * hold them, as none is stored before it (flush_tick). */
		u->replay_charged = true;
		size_t n = journal_foreach_unreleased(u->journal, charge_replayed, u);
		if (n > 0)
			log_info("usage: the journal holds %zu records of an earlier run; charged, storing them", n);
	}
}

/* US cents for tokens at price mp. */
static inline double cents_at(const struct model_price *mp, int64_t input_tokens, int64_t output_tokens)
{
	return ((double)input_tokens * mp->input_usd_per_mtok + (double)output_tokens * mp->output_usd_per_mtok) /
	       1e6 * 100.0;
}

/*
 * US cents for tokens of model at the prices last read (0 when the model has
 * none). The model found last is tried first (models are unique in
 * sluice.model_prices, so the answer is the scan's).
 */
static double price_cents(struct usage *u, const char *model, int64_t input_tokens, int64_t output_tokens)
{
	if (!u || !model)
		return 0;
	if (u->price_hint < u->n_prices && strcmp(u->prices[u->price_hint].model, model) == 0)
		return cents_at(&u->prices[u->price_hint], input_tokens, output_tokens);
	for (size_t i = 0; i < u->n_prices; i++)
		if (strcmp(u->prices[i].model, model) == 0) {
			u->price_hint = i;
			return cents_at(&u->prices[i], input_tokens, output_tokens);
		}
	return 0;
}

/* US cents for the tokens of a record at the prices last read (0 when the model has none). */
static double cost_cents(struct usage *u, const struct usage_record *r)
{
	return price_cents(u, r->model, r->input_tokens, r->output_tokens);
}

double usage_price_cents(const struct sluice *sl, const char *model, int64_t input_tokens,
                         int64_t output_tokens)
{
	return price_cents(sl->usage, model, input_tokens, output_tokens);
}

static void remember(struct usage *u, uint64_t seq, const struct usage_record *r, const uint16_t *lens);

/* ---- records ---- */

bool usage_can_record(const struct sluice *sl)
{
	const struct usage *u = sl->usage;
	/* after a failed append, refuse for a second, then try the disk again */
	return !u || !u->journal || !u->append_failed_at || now_usec() - u->append_failed_at > USEC_PER_SEC;
}

bool usage_wanted(const struct ai_tags *tags)
{
	return tags && (tags->tokens_in >= 0 || tags->tokens_out >= 0);
}

/* The trace id of a W3C traceparent "00-<trace id>-<span id>-<flags>"; returns its length. */
static uint16_t trace_id_of(const char *traceparent, char *out, size_t size)
{
	out[0] = '\0';
	if (strlen(traceparent) >= 35 && traceparent[2] == '-')
		snprintf(out, size, "%.32s", traceparent + 3);
	return (uint16_t)strlen(out);
}

/* str_copy that returns the length copied (what the journal and the shipment measure again otherwise). */
static uint16_t copy_text(char *dst, const char *src, size_t size)
{
	size_t n = strnlen(src, size - 1);
	memcpy(dst, src, n);
	dst[n] = '\0';
	return (uint16_t)n;
}

/* copy_text of src whose strlen n is known. */
static inline uint16_t copy_known(char *dst, const char *src, size_t n, size_t size)
{
	if (n > size - 1)
		n = size - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
	return (uint16_t)n;
}

/*
 * 16 random bytes for a record id. RAND_bytes costs thousands of
 * instructions a call whatever the length, so ids are cut from a pool that
 * is refilled 256 ids at a time (64 cost ~130 Ir an id); they are unique
 * keys, not secrets.
 */
static void random_id(uint8_t id[16])
{
	static uint8_t pool[16 * 256];
	static size_t used = sizeof(pool);
	if (used == sizeof(pool)) {
		if (RAND_bytes(pool, sizeof(pool)) != 1) {
			RAND_bytes(id, 16);    /* a failing DRBG: no worse than before */
			return;
		}
		used = 0;
	}
	memcpy(id, pool + used, 16);
	used += 16;
}

struct usage_pending *usage_prepare(const struct ai_context *c, const struct ai_tags *tags,
                                    const char *subject, const char *model)
{
	return usage_prepare_admitted(c, tags, subject, model, NULL);
}

struct usage_pending *usage_prepare_admitted(const struct ai_context *c, const struct ai_tags *tags,
                                             const char *subject, const char *model,
                                             const struct limit_reservation *resv)
{
	struct usage *u = c->sl->usage;
	bool record = u && u->journal && tags && (!resv || usage_wanted(tags));
	if (!record && !(resv && resv->held))
		return NULL;
	/* Not zeroed: every field read later is set here (the text fields
	 * NUL-terminated, read up to their NUL only). */
	struct usage_pending *p = u ? u->spare : NULL;
	if (p) {
		u->spare = p->next;
		u->n_spare--;
	} else if (!(p = malloc(sizeof(*p)))) {
		return NULL;
	}
	p->sl = c->sl;
	p->record = record;
	p->next = NULL;
	if (resv)
		p->resv = *resv;
	else
		memset(&p->resv, 0, sizeof(p->resv));
	p->rec.cached = false;
	p->rec.input_tokens = p->rec.output_tokens = 0;
	p->rec.statement_ms = 0;
	p->start = 0;
	if (!record) {
		str_copy(p->rec.subject, subject, sizeof(p->rec.subject));
		str_copy(p->rec.model, model ? model : "", sizeof(p->rec.model));
		return p;
	}
	struct usage_record *r = &p->rec;
	r->created_at_us = wall_usec();
	/* A UUID version 7 (RFC 9562, 5.7): created_at's Unix milliseconds, then random bits.
	 * Ids that grow with time keep the inserts into llm_usage's primary key at the right
	 * edge of the index instead of on a random page of it. */
	random_id(r->id);
	uint64_t ms = (uint64_t)r->created_at_us / 1000;
	for (int i = 0; i < 6; i++)
		r->id[i] = (uint8_t)(ms >> (40 - 8 * i));
	r->id[6] = (uint8_t)((r->id[6] & 0x0f) | 0x70);    /* UUID version 7 */
	r->id[8] = (uint8_t)((r->id[8] & 0x3f) | 0x80);    /* RFC 9562 variant */
	uint16_t *len = p->text_len;
	/* a name that is the tags' own: the parser measured it (at most 127 bytes, the fields hold 127) */
	if (subject == tags->user)
		len[T_SUBJECT] = copy_known(r->subject, subject, tags->user_len, sizeof(r->subject));
	else
		len[T_SUBJECT] = copy_text(r->subject, subject, sizeof(r->subject));
	len[T_USER] = copy_text(r->db_user, c->user, sizeof(r->db_user));
	len[T_DB] = copy_text(r->database, c->database, sizeof(r->database));
	if (model == tags->model)
		len[T_MODEL] = copy_known(r->model, model, tags->model_len, sizeof(r->model));
	else
		len[T_MODEL] = copy_text(r->model, model ? model : "", sizeof(r->model));
	r->input_tokens = tags->tokens_in > 0 ? tags->tokens_in : 0;
	r->output_tokens = tags->tokens_out > 0 ? tags->tokens_out : 0;
	r->llm_latency_ms = tags->latency_ms;
	r->cached = false;
	len[T_CONV] = copy_known(r->conversation_id, tags->conversation, tags->conversation_len,
	                         sizeof(r->conversation_id));
	len[T_TRACE] = trace_id_of(tags->traceparent, r->trace_id, sizeof(r->trace_id));
	memcpy(r->instance, u->instance, (size_t)u->instance_len + 1);    /* both 160 bytes */
	len[T_INST] = u->instance_len;
	p->start = now_usec();
	return p;
}

/* Keep p for the next usage_prepare (free it when enough are kept or recording stopped). */
static void pending_free(struct usage_pending *p)
{
	struct usage *u = p && p->sl ? p->sl->usage : NULL;
	if (u && u->n_spare < SPARE_PENDINGS) {
		p->next = u->spare;
		u->spare = p;
		u->n_spare++;
	} else {
		free(p);
	}
}

bool usage_commit(struct sluice *sl, struct usage_pending *p)
{
	struct usage *u = sl->usage;
	char err[256];
	bool stored = false;
	if (!p)
		return true;
	if (!p->record) {
		usage_discard(p);    /* no record: only the reservation to give back */
		return true;
	}
	p->rec.statement_ms = (double)(now_usec() - p->start) / 1000.0;
	if (!u || !u->journal || !journal_append_measured(u->journal, &p->rec, p->text_len, err, sizeof(err))) {
		/* Nothing to write to: the loss is loud, and counted. */
		log_error("usage record for \"%s\" lost: %s", p->rec.subject, u && u->journal ? err : "no journal");
		ai_stats_note_journaled(sl->ai_stats, false);
		if (u)
			u->append_failed_at = now_usec();
	} else {
		stored = true;
		u->append_failed_at = 0;
		remember(u, journal_current_seq(u->journal), &p->rec, p->text_len);
		ai_stats_note_journaled(sl->ai_stats, true);
		/* a segment is one shipment: at most usage_batch_size records */
		if (++u->appended_since_seal >= (uint64_t)sl->cfg->usage_batch_size) {
			journal_seal(u->journal);
			u->appended_since_seal = 0;
		}
	}
	double cents = u ? cost_cents(u, &p->rec) : 0;
	if (sl->limits)
		limits_settle(sl->limits, p->rec.subject, p->rec.model, &p->resv,
		              p->rec.input_tokens + p->rec.output_tokens, cents, wall_usec() / 1000);
	ai_stats_note_usage(sl->ai_stats, p->rec.subject, p->rec.model, p->rec.input_tokens, p->rec.output_tokens, cents);
	pending_free(p);
	return stored;
}

void usage_mark_cached(struct usage_pending *p)
{
	p->rec.cached = true;
	p->rec.input_tokens = 0;
	p->rec.output_tokens = 0;
}

void usage_hint_counters(struct usage_pending *p, const struct limit_reservation *from)
{
	if (p->resv.held)
		return;    /* a reservation's own counters */
	p->resv.counters[0] = from->counters[0];
	p->resv.counters[1] = from->counters[1];
	p->resv.counters_of = from->counters_of;
	p->resv.counters_gen = from->counters_gen;
}

void usage_discard(struct usage_pending *p)
{
	if (p && p->sl && p->sl->limits)
		limits_release(p->sl->limits, p->rec.subject, p->rec.model, &p->resv, wall_usec() / 1000);
	pending_free(p);
}

/* ---- the writer ---- */

/*
 * The columns of a shipment: one array parameter per column of the unnest
 * in ship_next, in PostgreSQL's binary form (sqlarray), so that a record
 * costs a few stores and copies, no quoting and no number formatting.
 */
enum { C_ID, C_US, C_SUBJECT, C_USER, C_DB, C_MODEL, C_TIN, C_TOUT, C_LAT, C_STMT, C_CACHED, C_CONV,
       C_TRACE, C_INST, N_COLS };

static const uint32_t col_oid[N_COLS] = {
	SQL_OID_UUID, SQL_OID_INT8, SQL_OID_TEXT, SQL_OID_TEXT, SQL_OID_TEXT, SQL_OID_TEXT, SQL_OID_INT8,
	SQL_OID_INT8, SQL_OID_INT8, SQL_OID_FLOAT8, SQL_OID_BOOL, SQL_OID_TEXT, SQL_OID_TEXT, SQL_OID_TEXT,
};

/*
 * The records of one segment as a shipment. Built as the records are
 * appended (usage_commit), so a sealed segment is shipped from memory and
 * not read back from its file; built from the file for what an earlier run
 * left, for a batch being split, and for a segment whose batch was dropped.
 */
struct batch {
	struct batch *next;            /* u->batches: ascending segment */
	uint64_t segment;
	size_t n;                      /* records in the columns */
	size_t bytes;                  /* what the columns hold, for BATCHES_MAX_BYTES */
	struct usage_record first;     /* record 0: moved to sluice.usage_rejects if refused alone */
	struct sqlarray col[N_COLS];
};

/*
 * Memory for batches: past it (PostgreSQL away a while, a huge
 * usage_batch_size) a segment's batch is dropped and the segment is read
 * back from its file when its turn comes, as after a restart.
 */
#define BATCHES_MAX_BYTES (32u * 1024 * 1024)

/* Start b empty for segment; with reuse, b's buffers (of an earlier batch) are kept, not freed. */
static void batch_init(struct batch *b, uint64_t segment, bool reuse)
{
	if (!reuse)
		memset(b->col, 0, sizeof(b->col));
	b->next = NULL;
	b->segment = segment;
	b->n = 0;
	b->bytes = 0;
	for (int i = 0; i < N_COLS; i++)
		sqlarray_init(&b->col[i], col_oid[i], reuse);
}

static void batch_clear(struct batch *b)
{
	for (int i = 0; i < N_COLS; i++)
		sqlarray_free(&b->col[i]);
}

/*
 * A text element: the bytes the journal stores (at most field_size - 1:
 * len, or measured when len is NULL), or NULL for "" if null_if_empty.
 */
__attribute__((always_inline))    /* 7 a record: a call's register saves cost ~15 Ir each */
static inline size_t add_text(struct sqlarray *a, const char *s, size_t field_size, const uint16_t *len,
                              bool null_if_empty)
{
	size_t n = len ? *len : strnlen(s, field_size - 1);
	if (n == 0 && null_if_empty)
		sqlarray_add_null(a);
	else
		sqlarray_add(a, s, n);
	return n;
}

#define ADD_TEXT(b, c, r, field, t, null_if_empty) \
	add_text(&(b)->col[c], (r)->field, sizeof((r)->field), lens ? &lens[t] : NULL, null_if_empty)

/*
 * Add r as the next row (lens: the lengths of its text fields in T_ order,
 * or NULL to measure them); returns the bytes added. The values are the ones
 * the text form had: statement_ms rounded to the microsecond (a double made
 * from whole microseconds / 1000 is the one float8in reads from "%.3f").
 */
static size_t batch_add(struct batch *b, const struct usage_record *r, const uint16_t *lens)
{
	size_t text = 0;
	if (b->n == 0)
		b->first = *r;
	sqlarray_add(&b->col[C_ID], r->id, 16);
	sqlarray_add_i64(&b->col[C_US], r->created_at_us);
	text += ADD_TEXT(b, C_SUBJECT, r, subject, T_SUBJECT, false);
	text += ADD_TEXT(b, C_USER, r, db_user, T_USER, false);
	text += ADD_TEXT(b, C_DB, r, database, T_DB, false);
	text += ADD_TEXT(b, C_MODEL, r, model, T_MODEL, true);
	sqlarray_add_i64(&b->col[C_TIN], r->input_tokens);
	sqlarray_add_i64(&b->col[C_TOUT], r->output_tokens);
	if (r->llm_latency_ms >= 0)
		sqlarray_add_i64(&b->col[C_LAT], r->llm_latency_ms);
	else
		sqlarray_add_null(&b->col[C_LAT]);
	uint64_t us = r->statement_ms > 0 ? (uint64_t)(r->statement_ms * 1000.0 + 0.5) : 0;
	sqlarray_add_f64(&b->col[C_STMT], (double)us / 1000.0);
	sqlarray_add_bool(&b->col[C_CACHED], r->cached);
	text += ADD_TEXT(b, C_CONV, r, conversation_id, T_CONV, true);
	text += ADD_TEXT(b, C_TRACE, r, trace_id, T_TRACE, true);
	text += ADD_TEXT(b, C_INST, r, instance, T_INST, false);
	b->n++;
	size_t bytes = N_COLS * 4 + 16 + 6 * 8 + 1 + text;
	b->bytes += bytes;
	return bytes;
}

static bool batch_failed(const struct batch *b)
{
	/* or'ed without an early exit: a loop the compiler unrolls (asked after every record) */
	bool failed = false;
	for (int i = 0; i < N_COLS; i++)
		failed |= b->col[i].t.failed;
	return failed;
}

/* Forget the in-memory batches of segments numbered <= seq (stored, or to be read from their files). */
static void drop_batches(struct usage *u, uint64_t seq)
{
	while (u->batches && u->batches->segment <= seq) {
		struct batch *b = u->batches;
		u->batches = b->next;
		u->batch_bytes -= b->bytes;
		if (!u->spare_batch && !batch_failed(b)) {
			u->spare_batch = b;    /* the next segment's batch grows no more */
		} else {
			batch_clear(b);
			free(b);
		}
	}
	if (!u->batches)
		u->batches_tail = NULL;
}

/*
 * r (its text lengths lens) was just appended to segment seq: add it to that segment's batch, or
 * start one if r is the segment's first record (a segment whose first
 * record is not in a batch is read from its file). Past BATCHES_MAX_BYTES
 * or out of memory, the batch of seq is dropped.
 */
static void remember(struct usage *u, uint64_t seq, const struct usage_record *r, const uint16_t *lens)
{
	struct batch *b = u->batches_tail;
	if (!b || b->segment != seq) {
		if (seq == u->file_only_segment)
			return;
		bool reuse = u->spare_batch != NULL;
		b = u->spare_batch;
		u->spare_batch = NULL;
		if (u->batch_bytes >= BATCHES_MAX_BYTES || (!b && !(b = malloc(sizeof(*b))))) {
			if (b) {
				batch_clear(b);
				free(b);
			}
			u->file_only_segment = seq;
			return;
		}
		batch_init(b, seq, reuse);
		if (u->batches_tail)
			u->batches_tail->next = b;
		else
			u->batches = b;
		u->batches_tail = b;
	}
	u->batch_bytes += batch_add(b, r, lens);
	if (u->batch_bytes > BATCHES_MAX_BYTES || batch_failed(b)) {
		/* b is the tail: drop it alone */
		struct batch **at = &u->batches;
		while (*at != b)
			at = &(*at)->next;
		*at = NULL;
		u->batches_tail = NULL;
		for (struct batch *x = u->batches; x; x = x->next)
			u->batches_tail = x;
		u->batch_bytes -= b->bytes;
		batch_clear(b);
		free(b);
		u->file_only_segment = seq;
	}
}

/* Reading a segment's records [lo, hi) from its file into a batch. */
struct reading {
	struct batch *b;
	uint64_t segment;
	size_t lo, hi;
	size_t seen;                   /* records of the segment read so far */
};

static void collect(void *arg, uint64_t segment, const struct usage_record *r)
{
	struct reading *rd = arg;
	if (segment != rd->segment)
		return;
	size_t index = rd->seen++;
	if (index < rd->lo || index >= rd->hi)
		return;
	batch_add(rd->b, r, NULL);
}

static void format_uuid(const uint8_t id[16], char out[37])
{
	static const char hex[] = "0123456789abcdef";
	char *o = out;
	for (int i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			*o++ = '-';
		*o++ = hex[id[i] >> 4];
		*o++ = hex[id[i] & 15];
	}
	*o = '\0';
}

static void shipped(void *arg, const PGresult *res);
static void quarantined(void *arg, const PGresult *res);
static void maintain_partitions(struct usage *u);

/*
 * s as the inside of a JSON string that is valid UTF-8 whatever s holds: a
 * byte that is not part of valid UTF-8 becomes the four characters \xNN and
 * a backslash is doubled (both once decoded), so the bytes can be told back.
 */
static void add_escaped(struct sqltext *t, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	for (size_t i = 0; s[i];) {
		unsigned char c = (unsigned char)s[i];
		/* the longest valid UTF-8 character starting here, if any */
		size_t len = 0;
		for (size_t n = 1; n <= 4 && len == 0; n++) {
			bool whole = true;
			for (size_t j = 0; j < n; j++)
				whole = whole && s[i + j];
			if (whole && tags_text_is_clean(s + i, n))
				len = n;
			if (!whole)
				break;
		}
		if (len == 0) {
			char esc[8] = { '\\', '\\', 'x', hex[c >> 4], hex[c & 15], '\0' };
			sqltext_str(t, esc);
			i++;
		} else if (c == '\\') {
			sqltext_str(t, "\\\\\\\\");
			i++;
		} else if (c == '"') {
			sqltext_str(t, "\\\"");
			i++;
		} else if (c < 0x20 || c == 0x7f) {
			char esc[8];
			snprintf(esc, sizeof(esc), "\\u%04x", c);
			sqltext_str(t, esc);
			i++;
		} else {
			sqltext_add(t, s + i, len);
			i += len;
		}
	}
}

static void add_json_bytes(struct sqltext *t, const char *s)
{
	sqltext_str(t, "\"");
	add_escaped(t, s);
	sqltext_str(t, "\"");
}

/* Move u->rejected to sluice.usage_rejects; its INSERT on its own failed with u->reject. */
static void quarantine(struct usage *u)
{
	const struct usage_record *r = &u->rejected;
	char id[37], us[24], num[64];
	struct sqltext rec = { 0 }, err = { 0 };
	format_uuid(r->id, id);
	snprintf(us, sizeof(us), "%lld", (long long)r->created_at_us);
	sqltext_str(&rec, "{\"subject\":");
	add_json_bytes(&rec, r->subject);
	sqltext_str(&rec, ",\"db_user\":");
	add_json_bytes(&rec, r->db_user);
	sqltext_str(&rec, ",\"database\":");
	add_json_bytes(&rec, r->database);
	sqltext_str(&rec, ",\"model\":");
	add_json_bytes(&rec, r->model);
	snprintf(num, sizeof(num), ",\"input_tokens\":%lld,\"output_tokens\":%lld",
	         (long long)r->input_tokens, (long long)r->output_tokens);
	sqltext_str(&rec, num);
	if (r->llm_latency_ms >= 0)
		snprintf(num, sizeof(num), ",\"llm_latency_ms\":%lld", (long long)r->llm_latency_ms);
	else
		snprintf(num, sizeof(num), ",\"llm_latency_ms\":null");
	sqltext_str(&rec, num);
	snprintf(num, sizeof(num), ",\"statement_ms\":%.3f,\"cached\":%s",
	         isfinite(r->statement_ms) ? r->statement_ms : 0.0, r->cached ? "true" : "false");
	sqltext_str(&rec, num);
	sqltext_str(&rec, ",\"conversation_id\":");
	add_json_bytes(&rec, r->conversation_id);
	sqltext_str(&rec, ",\"trace_id\":");
	add_json_bytes(&rec, r->trace_id);
	sqltext_str(&rec, ",\"instance\":");
	add_json_bytes(&rec, r->instance);
	sqltext_str(&rec, "}");
	/* the message as a JSON string, unquoted again by PostgreSQL: valid UTF-8 whatever it quotes */
	add_json_bytes(&err, u->reject.message);
	if (!rec.failed && !err.failed) {
		const char *p6[6] = { id, us, u->instance, u->reject.sqlstate, err.s, rec.s };
		u->shipping = sidechan_query(u->sc,
			"INSERT INTO sluice.usage_rejects (id, created_at, instance, sqlstate, error, record) "
			"VALUES ($1::uuid, 'epoch'::timestamptz + $2::bigint * interval '1 microsecond', $3, $4, "
			"$5::jsonb #>> '{}', $6::jsonb) ON CONFLICT (id, created_at) DO NOTHING",
			6, p6, quarantined, u);
	}
	sqltext_free(&rec);
	sqltext_free(&err);
}

/*
 * The shipment: the records, priced, into sluice.llm_usage, and the rows
 * stored (not the replays ON CONFLICT drops) into the daily roll-up in the
 * same statement, so both commit or neither does. Records' ids are unique,
 * so only a segment sent again after a commit whose outcome was not seen can
 * hit ids PostgreSQL holds: it is sent plain (ON CONFLICT's speculative
 * insertion costs PostgreSQL ~2 us a row) and again with ON CONFLICT (id,
 * created_at) DO NOTHING after a unique violation.
 */
#define SHIP_INSERT \
	"WITH stored AS (INSERT INTO sluice.llm_usage (id, created_at, subject, db_user, database, model, " \
	"input_tokens, output_tokens, cost_cents, llm_latency_ms, statement_ms, cached, " \
	"conversation_id, trace_id, instance) " \
	"SELECT r.id, 'epoch'::timestamptz + r.us * interval '1 microsecond', r.subject, r.db_user, r.database, r.model, " \
	"r.tin, r.tout, CASE WHEN r.cached THEN 0 ELSE round((r.tin * p.input_usd_per_mtok + r.tout * p.output_usd_per_mtok) / 1e4, 4) END, " \
	"r.lat, r.stmt, r.cached, r.conv, r.trace, r.inst " \
	"FROM unnest($1::uuid[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], " \
	"$7::bigint[], $8::bigint[], $9::bigint[], $10::float8[], $11::bool[], $12::text[], " \
	"$13::text[], $14::text[]) AS r(id, us, subject, db_user, database, model, tin, tout, lat, " \
	"stmt, cached, conv, trace, inst) " \
	"LEFT JOIN sluice.model_prices p ON p.model = r.model "
#define SHIP_ROLLUP \
	"RETURNING created_at, subject, model, input_tokens, output_tokens, cost_cents, cached, " \
	"llm_latency_ms, statement_ms) " \
	"INSERT INTO sluice.usage_daily AS d (day, subject, model, requests, input_tokens, output_tokens, " \
	"tokens, cost_cents, cache_hits, llm_latency_ms_sum, llm_latency_calls, statement_ms_sum) " \
	"SELECT (created_at AT TIME ZONE 'UTC')::date, subject, coalesce(model, ''), count(*), " \
	"sum(input_tokens), sum(output_tokens), sum(input_tokens + output_tokens), " \
	"coalesce(sum(cost_cents), 0), count(*) FILTER (WHERE cached), coalesce(sum(llm_latency_ms), 0), " \
	"count(llm_latency_ms), coalesce(sum(statement_ms), 0) " \
	"FROM stored GROUP BY 1, 2, 3 ORDER BY 1, 2, 3 " \
	"ON CONFLICT (day, subject, model) DO UPDATE SET requests = d.requests + EXCLUDED.requests, " \
	"input_tokens = d.input_tokens + EXCLUDED.input_tokens, " \
	"output_tokens = d.output_tokens + EXCLUDED.output_tokens, tokens = d.tokens + EXCLUDED.tokens, " \
	"cost_cents = d.cost_cents + EXCLUDED.cost_cents, cache_hits = d.cache_hits + EXCLUDED.cache_hits, " \
	"llm_latency_ms_sum = d.llm_latency_ms_sum + EXCLUDED.llm_latency_ms_sum, " \
	"llm_latency_calls = d.llm_latency_calls + EXCLUDED.llm_latency_calls, " \
	"statement_ms_sum = d.statement_ms_sum + EXCLUDED.statement_ms_sum"
static const char SHIP_SQL[] = SHIP_INSERT SHIP_ROLLUP;
static const char SHIP_DEDUP_SQL[] = SHIP_INSERT "ON CONFLICT (id, created_at) DO NOTHING " SHIP_ROLLUP;

/*
 * INSERT the oldest unreleased segment (or, while it is being split, the
 * part of it not stored yet); cost is priced by PostgreSQL from
 * sluice.model_prices. A whole segment is shipped from its in-memory batch
 * when there is one; the file is read otherwise.
 */
static void ship_next(struct usage *u)
{
	uint64_t segment;
	if (!journal_oldest_unreleased(u->journal, &segment))
		return;
	if (segment > 0)
		drop_batches(u, segment - 1);    /* released without them (an empty segment) */
	if (segment != u->split_segment) {
		u->split_segment = segment;
		u->split_done = 0;
		u->split_end = SIZE_MAX;
	}
	/* A batch in u->batches is lent to the side channel (not copied): it is
	 * neither added to (its segment is sealed) nor dropped (ship_next,
	 * stored_up_to) until shipped or quarantined is called. */
	struct batch *b = u->batches, from_file;
	size_t total;
	bool whole = u->split_done == 0 && u->split_end == SIZE_MAX;
	if (b && b->segment == segment && whole) {
		total = b->n;
	} else {
		struct reading rd = { &from_file, segment, u->split_done, u->split_end, 0 };
		b = &from_file;
		batch_init(b, segment, false);
		journal_foreach_in_segment(u->journal, segment, collect, &rd);
		total = rd.seen;
	}
	const char *params[N_COLS];
	int lengths[N_COLS], formats[N_COLS];
	bool ok = true;
	for (int i = 0; i < N_COLS; i++) {
		params[i] = sqlarray_finish(&b->col[i], &lengths[i]);
		formats[i] = 1;
		ok = ok && params[i];
	}
	if (ok && b->n == 0) {
		/* an empty (or wholly corrupt) segment, or every record of it stored: release it */
		journal_release(u->journal, segment);
		drop_batches(u, segment);
		u->split_segment = 0;
	} else if (ok) {
		u->shipping = sidechan_query_params(u->sc,
			segment == u->dedup_segment ? SHIP_DEDUP_SQL : SHIP_SQL,
			N_COLS, params, lengths, formats, b != &from_file, shipped, u);
		if (u->shipping) {
			u->shipping_segment = segment;
			u->ship_lo = u->split_done;
			u->ship_hi = u->split_done + b->n;
			u->ship_total = total;
			u->rejected = b->first;
		}
	}
	if (b == &from_file)
		batch_clear(b);
}

/* After a shipment or a quarantine: call the drain's done once the journal is empty. */
static void drain_check(struct usage *u)
{
	if (!u->shipping && u->drain_done && journal_backlog_bytes(u->journal) == 0) {
		void (*done)(struct sluice *) = u->drain_done;
		u->drain_done = NULL;
		done(u->sl);
	}
}

/* Records [0, done) of the segment in flight are stored: go on with the rest, or release it. */
static void stored_up_to(struct usage *u, size_t done)
{
	u->split_done = done;
	u->split_end = SIZE_MAX;
	if (done >= u->ship_total) {
		journal_release(u->journal, u->shipping_segment);
		drop_batches(u, u->shipping_segment);
		u->split_segment = 0;
		if (journal_backlog_bytes(u->journal) < BACKLOG_WARN_BYTES)
			u->backlog_warned = false;
	}
	ship_next(u);
	drain_check(u);
}

#define SQLSTATE_UNIQUE_VIOLATION "23505"    /* errcodes-appendix.html: a replayed record */

/*
 * An error about the data of the rows (data exception, integrity constraint
 * violation): a record PostgreSQL will refuse however often it is sent.
 * Anything else (connection, permissions, a missing table, a read-only or
 * shutting-down server) may pass, so the batch is sent again later as it is.
 */
static bool refused_for_data(const char *state)
{
	return state && (strncmp(state, "22", 2) == 0 || strncmp(state, "23", 2) == 0);
}

static void shipped(void *arg, const PGresult *res)
{
	struct usage *u = arg;
	u->shipping = false;
	if (res && PQresultStatus(res) == PGRES_COMMAND_OK) {
		stored_up_to(u, u->ship_hi);
		return;
	}
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	if (state && strcmp(state, SQLSTATE_UNIQUE_VIOLATION) == 0 &&
	    u->dedup_segment != u->shipping_segment) {
		/* records of this segment were stored by a commit we did not see: the
		 * same range again, the ones PostgreSQL holds left out */
		log_info("usage: some records of journal segment %llu are already stored; storing the others",
		         (unsigned long long)u->shipping_segment);
		u->dedup_segment = u->shipping_segment;
		ship_next(u);
		return;
	}
	if (!res || !refused_for_data(state)) {
		if (res)
			log_warning("usage: storing records failed, they stay in the journal: %s",
			            PQresultErrorMessage(res));
		return;    /* retried on the next flush: ids already stored are a unique violation, then dropped */
	}
	/* One record (or more) PostgreSQL refuses: halve the batch until it stands
	 * alone, store the rest, and move it to sluice.usage_rejects. */
	if (u->ship_hi - u->ship_lo > 1) {
		if (u->split_end == SIZE_MAX)
			log_warning("usage: PostgreSQL refused a batch of %zu records, finding the one it refuses: %s",
			            u->ship_hi - u->ship_lo, PQresultErrorMessage(res));
		u->split_done = u->ship_lo;
		u->split_end = u->ship_lo + (u->ship_hi - u->ship_lo) / 2;
		ship_next(u);
		return;
	}
	struct pg_error *e = &u->reject;
	str_copy(e->message, PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) ?
	         PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : PQresultErrorMessage(res), sizeof(e->message));
	str_copy(e->sqlstate, PQresultErrorField(res, PG_DIAG_SQLSTATE), sizeof(e->sqlstate));
	u->split_done = u->ship_lo;
	u->split_end = u->ship_hi;
	quarantine(u);
}

static void quarantined(void *arg, const PGresult *res)
{
	struct usage *u = arg;
	u->shipping = false;
	if (!res || PQresultStatus(res) != PGRES_COMMAND_OK) {
		if (res)
			log_warning("usage: moving a refused record to sluice.usage_rejects failed, "
			            "it stays in the journal: %s", PQresultErrorMessage(res));
		return;    /* the next flush sends it alone again, and quarantines it again */
	}
	char id[37];
	format_uuid(u->rejected.id, id);
	struct sqltext subject = { 0 }, model = { 0 };
	add_escaped(&subject, u->rejected.subject);
	add_escaped(&model, u->rejected.model);
	log_warning("usage: record %s of subject \"%s\" moved to sluice.usage_rejects: PostgreSQL refused it: %s",
	            id, subject.s ? subject.s : "", u->reject.message);
	ai_stats_note_rejected(u->sl->ai_stats, subject.s ? subject.s : "", model.s ? model.s : "");
	sqltext_free(&subject);
	sqltext_free(&model);
	stored_up_to(u, u->ship_lo + 1);
}

static void seal_if_needed(struct usage *u)
{
	if (u->appended_since_seal > 0) {
		journal_seal(u->journal);
		u->appended_since_seal = 0;
	}
}

static void flush_tick(evutil_socket_t fd, short what, void *arg)
{
	struct usage *u = arg;
	(void)fd;
	(void)what;
	uint64_t backlog = journal_backlog_bytes(u->journal);
	if (backlog >= BACKLOG_WARN_BYTES && !u->backlog_warned) {
		log_warning("usage: the journal holds %llu MB not yet stored in PostgreSQL",
		            (unsigned long long)(backlog >> 20));
		u->backlog_warned = true;
	}
	if (!sidechan_is_up(u->sc))
		return;
	if (!u->prices_running && (!u->prices_read || u->flushes_since_prices++ % 50 == 0))
		u->prices_running = sidechan_query(u->sc, PRICES_SQL, 0, NULL, prices_loaded, u);
	if (u->shipping)
		return;
	/* Budgets are seeded from what sluice.llm_usage holds: the records an
	 * earlier run left in the journal are charged once the prices are read
	 * (prices_loaded), so they are stored only after the seed, or they would
	 * count twice. */
	if (u->sl->limits_sync && !limits_sync_seeded(u->sl))
		return;
	seal_if_needed(u);
	if (now_usec() - u->last_maintenance > 3600 * USEC_PER_SEC) {
		u->last_maintenance = now_usec();
		maintain_partitions(u);
	}
	ship_next(u);
}

/* fsync off the data path: what a machine crash can lose is bounded by this period. */
static void sync_tick(evutil_socket_t fd, short what, void *arg)
{
	struct usage *u = arg;
	(void)fd;
	(void)what;
	journal_sync(u->journal);
}

static void partitions_made(void *arg, const PGresult *res)
{
	(void)arg;
	if (res && PQresultStatus(res) != PGRES_TUPLES_OK)
		log_warning("usage: creating partitions failed: %s", PQresultErrorMessage(res));
}

/* Partitions ahead and, with usage_retention_months, old months dropped whole. */
static void maintain_partitions(struct usage *u)
{
	sidechan_query(u->sc, "SELECT sluice.ensure_usage_partitions()", 0, NULL, partitions_made, u);
	if (u->sl->cfg->usage_retention_months > 0) {
		char months[16];
		snprintf(months, sizeof(months), "%d", u->sl->cfg->usage_retention_months);
		const char *params[1] = { months };
		sidechan_query(u->sc, "SELECT sluice.drop_usage_partitions_before($1::int)", 1, params,
		               partitions_made, u);
	}
}

static void on_state(void *arg, bool up)
{
	struct usage *u = arg;
	if (up) {
		/* prices first: a call made from now on is charged its cost */
		if (!u->prices_running)
			u->prices_running = sidechan_query(u->sc, PRICES_SQL, 0, NULL, prices_loaded, u);
		u->flushes_since_prices = 1;
		u->last_maintenance = now_usec();
		maintain_partitions(u);
	}
}

/* A record an earlier run journaled but did not store: its tokens and cost
 * still count against today's and this month's budgets. */
static void charge_replayed(void *arg, uint64_t segment, const struct usage_record *r)
{
	struct usage *u = arg;
	(void)segment;
	if (u->sl->limits)
		limits_charge(u->sl->limits, r->subject, r->model, r->input_tokens + r->output_tokens,
		              r->cached ? 0 : cost_cents(u, r), r->created_at_us / 1000);
}

/*
 * Before pgsluice serves anyone, on a blocking connection of its own: read
 * the prices (and so charge the journal's leftovers), so that the first call
 * is charged its cost. Skipped when the limits could not be loaded either
 * (ai_database unreachable: one connect timeout at start is enough).
 */
static void preload(struct usage *u, const struct db_target *t)
{
	if (!limits_sync_ready(u->sl))
		return;
	PGconn *conn = PQconnectdbParams(t->keys, t->values, 0);
	if (conn && PQstatus(conn) == CONNECTION_OK) {
		PGresult *res = PQexec(conn, "SET statement_timeout = '5s'");
		PQclear(res);
		res = PQexec(conn, PRICES_SQL);
		prices_loaded(u, res);
		PQclear(res);
	} else {
		char why[256];
		str_copy(why, conn ? PQerrorMessage(conn) : "out of memory", sizeof(why));
		why[strcspn(why, "\n")] = '\0';
		log_warning("usage: could not read sluice.model_prices at start: %s", why);
	}
	PQfinish(conn);
}

bool usage_ready(const struct sluice *sl)
{
	const struct usage *u = sl->usage;
	return !u || (u->prices_read && u->replay_charged);
}


bool usage_start(struct sluice *sl)
{
	char err[512];
	const struct sluice_config *cfg = sl->cfg;
	if (!cfg->ai_database[0])
		return true;
	struct usage *u = calloc(1, sizeof(*u));
	if (!u)
		return false;
	u->sl = sl;
	sl->usage = u;
	str_copy(u->instance, sl->instance, sizeof(u->instance));
	u->instance_len = (uint16_t)strlen(u->instance);
	u->journal = journal_open(cfg->usage_journal_dir, err, sizeof(err));
	if (!u->journal) {
		log_error("usage: %s", err);
		usage_stop(sl);
		return false;
	}
	struct db_target t;
	if (!ai_db_target_resolve(cfg, sl->userlist, "pgsluice-usage", 5, &t, err, sizeof(err))) {
		log_error("usage: %s", err);
		usage_stop(sl);
		return false;
	}
	u->sc = sidechan_new(sl->base, "usage", t.keys, t.values, on_state, u);
	u->flush_ev = event_new(sl->base, -1, EV_PERSIST, flush_tick, u);
	u->sync_ev = event_new(sl->base, -1, EV_PERSIST, sync_tick, u);
	if (!u->sc || !u->flush_ev || !u->sync_ev || !timer_add_usec(u->flush_ev, cfg->usage_flush_interval) ||
	    !timer_add_usec(u->sync_ev, USEC_PER_SEC)) {
		usage_stop(sl);
		return false;
	}
	preload(u, &t);
	return true;
}

void usage_reconfigure(struct sluice *sl)
{
	struct usage *u = sl->usage;
	if (!u || !u->flush_ev)
		return;
	event_del(u->flush_ev);
	timer_add_usec(u->flush_ev, sl->cfg->usage_flush_interval);
}

static void drain_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct usage *u = arg;
	(void)fd;
	(void)what;
	if (!u->drain_done)
		return;
	log_warning("usage: %llu bytes of records not stored yet stay in the journal for the next start",
	            (unsigned long long)journal_backlog_bytes(u->journal));
	void (*done)(struct sluice *) = u->drain_done;
	u->drain_done = NULL;
	done(u->sl);
}

bool usage_drain(struct sluice *sl, int timeout_ms, void (*done)(struct sluice *sl))
{
	struct usage *u = sl->usage;
	if (!u || !u->journal)
		return false;
	seal_if_needed(u);
	/* A side channel still connecting (a stop right after start) is waited
	 * for; one whose connection failed is not: the journal keeps the records. */
	if (journal_backlog_bytes(u->journal) == 0 || (sidechan_is_down(u->sc) && sidechan_last_error(u->sc)[0]))
		return false;
	u->drain_done = done;
	u->drain_ev = evtimer_new(sl->base, drain_timeout, u);
	struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
	if (u->drain_ev)
		evtimer_add(u->drain_ev, &tv);
	if (!u->shipping)
		ship_next(u);
	return true;
}

void usage_stop(struct sluice *sl)
{
	struct usage *u = sl->usage;
	if (!u)
		return;
	sl->usage = NULL;
	if (u->flush_ev)
		event_free(u->flush_ev);
	if (u->sync_ev)
		event_free(u->sync_ev);
	if (u->drain_ev)
		event_free(u->drain_ev);
	u->drain_done = NULL;
	sidechan_free(u->sc);
	drop_batches(u, UINT64_MAX);
	if (u->spare_batch) {
		batch_clear(u->spare_batch);
		free(u->spare_batch);
	}
	while (u->spare) {
		struct usage_pending *p = u->spare;
		u->spare = p->next;
		free(p);
	}
	if (u->journal)
		journal_close(u->journal);
	for (size_t i = 0; i < u->n_prices; i++)
		free(u->prices[i].model);
	free(u->prices);
	free(u);
}
