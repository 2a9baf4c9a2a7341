/* SPDX-License-Identifier: PostgreSQL */
/*
 * usage.h - LLM usage records (src/ai/README.md): made when a statement that
 * carries ai_tokens_in/ai_tokens_out completes, written to the journal
 * before the client sees ReadyForQuery, shipped to sluice.llm_usage in batches.
 */
#ifndef SLUICE_AI_USAGE_H
#define SLUICE_AI_USAGE_H

#include <stdbool.h>
#include <stdint.h>

struct sluice;
struct ai_context;
struct ai_tags;
struct usage_pending;
struct limit_reservation;

/*
 * Start recording for sl: open the journal in usage_journal_dir (records a
 * previous run left there are shipped first), the writer's side channel to
 * ai_database and its timers, and (after limits_sync_start, before clients
 * are served) read the prices on a blocking connection. Without ai_database
 * nothing is recorded and this returns true. Returns false when the journal
 * cannot be opened.
 */
bool usage_start(struct sluice *sl);

/* Apply changed intervals after a reload. */
void usage_reconfigure(struct sluice *sl);

/*
 * Ship what the journal holds within timeout_ms (graceful shutdown), then
 * call done (from the event loop). A side channel still making its first
 * connection (a stop right after start) is waited for. Returns false when
 * there is nothing to wait for: an empty journal, or a side channel whose
 * connection failed (the records stay in the journal); done is not called.
 */
bool usage_drain(struct sluice *sl, int timeout_ms, void (*done)(struct sluice *sl));

/* Stop, close the journal (records not shipped stay in it for the next start). */
void usage_stop(struct sluice *sl);

/*
 * A record for a statement of the client c describes, with tags (which carry ai_tokens_in
 * or ai_tokens_out), charged to subject and model (borrowed, copied), timed
 * from now. NULL when recording is off or out of memory. Owned by the
 * caller until usage_commit or usage_discard.
 */
struct usage_pending *usage_prepare(const struct ai_context *c, const struct ai_tags *tags,
                                    const char *subject, const char *model);

/*
 * The per-statement state of an admitted attributed statement (tags may be
 * NULL): the usage record when tags carry token counts and recording is on,
 * and the limits reservation resv (copied) that admission made. Committed
 * (usage_commit: journal the record, settle the reservation with the real
 * tokens and cost) or discarded (usage_discard: give the reservation back)
 * by the core like any record. NULL when there is neither a record to make
 * nor a reservation held, or out of memory (the caller then releases resv).
 */
struct usage_pending *usage_prepare_admitted(const struct ai_context *c, const struct ai_tags *tags,
                                             const char *subject, const char *model,
                                             const struct limit_reservation *resv);

/* US cents of input/output tokens of model at the prices last read from sluice.model_prices (0: no price). */
double usage_price_cents(const struct sluice *sl, const char *model, int64_t input_tokens,
                         int64_t output_tokens);

/*
 * The statement completed: write the record to the journal (write(2), no
 * fsync), settle its reservation and charge the subject's token and cost
 * budgets, free p (a p without a record only gives its reservation back). Must be
 * called before the client is told the statement succeeded. Returns false
 * when the record could not be journaled: the caller then fails the
 * statement towards the client (53100), so no unrecorded call is acknowledged.
 */
bool usage_commit(struct sluice *sl, struct usage_pending *p);

/* p records a completion-cache hit: cached = true, no tokens (none were spent). */
void usage_mark_cached(struct usage_pending *p);

/*
 * p (holding no reservation) may settle on the counters admission used for
 * another statement of the same subject: from's counters are copied to p,
 * nothing is reserved (limits_settle checks them before use: limits.h).
 */
void usage_hint_counters(struct usage_pending *p, const struct limit_reservation *from);

/* The statement failed or its server was lost: no record; its reservation is given back. NULL is ignored. */
void usage_discard(struct usage_pending *p);

/*
 * False while the journal cannot be written (a record failed to append in
 * the last second): statements that would make a record are then refused,
 * so no client is told of a call whose usage was not recorded.
 */
bool usage_can_record(const struct sluice *sl);

/*
 * True once sluice.model_prices was read (at start, before clients are
 * served, or later by the side channel) and the records an earlier run left
 * in the journal were charged to their budgets at those prices; also true
 * when recording is off. Until then attributed statements are refused, as
 * their cost could not be charged (docs/limits.md, "At start").
 */
bool usage_ready(const struct sluice *sl);

/* True when tags carry token counts, so the statement makes a usage record. */
bool usage_wanted(const struct ai_tags *tags);

#endif
