/* SPDX-License-Identifier: PostgreSQL */
/* middleware.c - see middleware.h. */
#include "ai/middleware.h"
#include "ai/stats.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "ai/limits.h"
#include "ai/limits_sync.h"
#include "ai/usage.h"
#include "ai/context.h"
#include "ai/session.h"
#include "proto.h"
#include "sluice.h"
#include "util.h"

void refusal_start(struct pg_error *refusal, const char *sqlstate)
{
	memset(refusal, 0, sizeof(*refusal));
	str_copy(refusal->severity, "ERROR", sizeof(refusal->severity));
	str_copy(refusal->sqlstate, sqlstate, sizeof(refusal->sqlstate));
}

enum tags_result middleware_tags(const char *text, size_t len, struct ai_tags *tags,
                                 struct pg_error *refusal)
{
	/* one memo for the process: the event loop's (middleware.h) */
	static struct tags_memo memo;
	char err[TAGS_ERRBUF_SIZE];
	enum tags_result r = tags_parse_memo(&memo, text, len, tags, err, sizeof(err));
	if (r == TAGS_INVALID) {
		refusal_start(refusal, SQLSTATE_INVALID_PARAMETER_VALUE);
		snprintf(refusal->message, sizeof(refusal->message), "%s", err);
		if (tags->error_detail)
			str_copy(refusal->detail, tags->error_detail, sizeof(refusal->detail));
		str_copy(refusal->hint, "Tag values are sqlcommenter-encoded: ai_tokens_in='120'.",
		         sizeof(refusal->hint));
	}
	return r;
}

/* The last Parse query middleware_parse_tags parsed, and its tags. */
static struct {
	bool valid;
	enum tags_result result;     /* TAGS_NONE or TAGS_OK: an invalid one is parsed again */
	size_t len;
	struct ai_tags tags;
	char text[MIDDLEWARE_PARSE_MEMO_MAX];
} parse_memo;

enum tags_result middleware_parse_tags(const char *text, size_t len, struct ai_tags *tags,
                                       struct pg_error *refusal)
{
	if (parse_memo.valid && parse_memo.len == len && memcmp(parse_memo.text, text, len) == 0) {
		tags_copy(tags, &parse_memo.tags);    /* tags_parse is a function of the text alone */
		return parse_memo.result;
	}
	enum tags_result r = middleware_tags(text, len, tags, refusal);
	parse_memo.valid = r != TAGS_INVALID && len <= sizeof(parse_memo.text);
	if (parse_memo.valid) {
		parse_memo.result = r;
		parse_memo.len = len;
		parse_memo.tags = *tags;
		memcpy(parse_memo.text, text, len);
	}
	return r;
}

static int64_t wall_ms(void)
{
	return wall_usec() / 1000;
}

/* Whom a tagged (or sluice.user) statement is charged to: the ai_user tag, sluice.user, else the role. */
static const char *subject_of(const struct ai_context *c, const struct ai_tags *tags)
{
	if (tags && tags->has_ai_key && tags->user[0])
		return tags->user;
	return c->session->user[0] ? c->session->user : c->user;
}

static const char *model_of(const struct ai_context *c, const struct ai_tags *tags)
{
	return tags && tags->has_ai_key && tags->model[0] ? tags->model : c->session->model;
}

/*
 * The counters the last admission with a reservation slot used: a cache
 * hit's record, made after its admission without a reservation, settles on
 * them (limits_settle checks they are still there and are the record's).
 */
static struct limit_reservation last_admitted;

struct usage_pending *middleware_hit_usage(const struct ai_context *c, const struct ai_tags *tags)
{
	struct usage_pending *p = usage_prepare(c, tags, subject_of(c, tags), model_of(c, tags));
	if (p) {
		usage_mark_cached(p);
		usage_hint_counters(p, &last_admitted);
	}
	return p;
}

/*
 * What the statement will spend, reserved at admission (docs/limits.md): its
 * own ai_tokens_in/ai_tokens_out when it carries them (a usage record: exact,
 * priced now), else ai_tokens_estimate / ai_cost_estimate, else -1: the
 * running mean of the subject's (and model's) recent calls.
 */
static struct limit_estimate estimate_of(const struct sluice *sl, const struct ai_tags *tags, const char *model,
                                         bool wanted)
{
	struct limit_estimate est = { -1, -1 };
	if (!tags)
		return est;
	if (wanted) {
		int64_t in = tags->tokens_in > 0 ? tags->tokens_in : 0, out = tags->tokens_out > 0 ? tags->tokens_out : 0;
		est.tokens = in + out;
		est.cost_cents = usage_price_cents(sl, model, in, out);
	} else if (tags->tokens_estimate >= 0) {
		est.tokens = tags->tokens_estimate;
		/* the split of input and output is unknown: priced at the dearer of the two */
		double as_in = usage_price_cents(sl, model, tags->tokens_estimate, 0);
		double as_out = usage_price_cents(sl, model, 0, tags->tokens_estimate);
		est.cost_cents = as_in > as_out ? as_in : as_out;
	}
	if (tags->cost_estimate_cents >= 0 && !wanted)
		est.cost_cents = tags->cost_estimate_cents;
	return est;
}

bool middleware_admit(const struct ai_context *c, const struct ai_tags *tags, struct pg_error *refusal,
                      struct usage_pending **usage)
{
	struct sluice *sl = c->sl;
	if (usage)
		*usage = NULL;
	bool tagged = tags && tags->has_ai_key;
	if (!tagged && !c->session->user[0])
		return true;    /* not attributed: a plain pooler's statement */
	const char *subject = c->user;
	if (tagged && tags->user[0]) {
		const char *trusted = sl->cfg->tag_trusted_roles;
		if (trusted[0] && !str_list_contains(trusted, c->user)) {
			refusal_start(refusal, SQLSTATE_INSUFFICIENT_PRIVILEGE);
			snprintf(refusal->message, sizeof(refusal->message),
			         "permission denied to set ai_user as role \"%s\"", c->user);
			str_copy(refusal->hint, "Add the role to tag_trusted_roles in the pgsluice configuration.",
			         sizeof(refusal->hint));
			ai_stats_note_statement(sl->ai_stats, c->user, tags->model[0] ? tags->model : c->session->model,
			                          REFUSAL_UNTRUSTED_AI_USER);   /* SHOW USAGE, /metrics */
			return false;
		}
		subject = tags->user;
	} else if (c->session->user[0]) {
		subject = c->session->user;
	}
	const char *model = model_of(c, tags);
	if (!limits_sync_ready(sl) || !usage_ready(sl)) {
		/* Fail closed: without its limits, budget seed and prices, pgsluice
		 * cannot tell whether the subject may spend more. */
		refusal_start(refusal, SQLSTATE_RATE_LIMIT_EXCEEDED);
		snprintf(refusal->message, sizeof(refusal->message),
		         "limits and budgets for \"%s\" are not loaded yet", subject);
		snprintf(refusal->detail, sizeof(refusal->detail),
		         "pgsluice has not yet read sluice.limits, sluice.model_prices and sluice.llm_usage "
		         "from ai_database \"%s\".", sl->cfg->ai_database);
		str_copy(refusal->hint, "Retry once ai_database can be reached; statements without ai_ tags "
		         "or sluice.user are not affected.", sizeof(refusal->hint));
		return false;
	}
	bool wanted = tagged && usage_wanted(tags);   /* a usage record: asked once */
	if (wanted && !usage_can_record(sl)) {
		refusal_start(refusal, SQLSTATE_DISK_FULL);
		str_copy(refusal->message, "could not record LLM usage: the usage journal cannot be written",
		         sizeof(refusal->message));
		str_copy(refusal->hint, "Check the free space and permissions of usage_journal_dir.", sizeof(refusal->hint));
		return false;
	}
	struct limit_refusal r;
	/* without any rule the estimate is never looked at: not priced then */
	struct limit_estimate est = { -1, -1 };
	if (!limits_rules_empty(sl->limits))
		est = estimate_of(sl, tagged ? tags : NULL, model, wanted);
	struct limit_reservation resv;
	int64_t now = wall_ms();
	if (!sl->limits || limits_admit_reserve(sl->limits, subject, model, now, &est, usage ? &resv : NULL, &r)) {
		ai_stats_note_statement(sl->ai_stats, subject, model, REFUSAL_NONE);   /* SHOW USAGE, /metrics */
		if (usage) {
			if (!sl->limits)
				memset(&resv, 0, sizeof(resv));
			last_admitted = resv;
			/* with neither a record to make nor a reservation to carry it
			 * would return NULL: the usual case of a tag without token counts
			 * and no limit in force is told here without the call */
			if (wanted || resv.held)
				*usage = usage_prepare_admitted(c, tagged ? tags : NULL, subject, model, &resv);
			if (!*usage && resv.held)
				limits_release(sl->limits, subject, model, &resv, now);   /* out of memory */
		}
		return true;
	}
	limits_format_refusal(&r, subject, refusal);
	ai_stats_note_statement(sl->ai_stats, subject, model, (enum refusal_reason)r.dim);   /* SHOW USAGE, /metrics */
	return false;
}
