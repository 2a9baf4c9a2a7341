/* SPDX-License-Identifier: PostgreSQL */
/*
 * middleware.h - the step a client takes before a statement is routed:
 * given the statement's tags and the client's own settings, decide whether
 * it runs (and as whose) or is refused with an error (docs/ai-middleware.md, docs/limits.md).
 * Knows nothing of sockets or of struct client: the core hands it parsed
 * tags and a struct ai_context.
 */
#ifndef SLUICE_AI_MIDDLEWARE_H
#define SLUICE_AI_MIDDLEWARE_H

#include <stdbool.h>
#include <stddef.h>

#include "ai/tags.h"
#include "pgerror.h"

struct ai_context;
struct usage_pending;

/*
 * Start refusal as an error with sqlstate and severity ERROR, every other
 * field empty; the caller writes the message, DETAIL and HINT
 * (error-style-guide.html).
 */
void refusal_start(struct pg_error *refusal, const char *sqlstate);

/*
 * Tags of a statement text[0..len) (Query text or Parse query): TAGS_NONE
 * costs one scan for the comment opener; a statement whose one comment is the
 * one the last call parsed gets its tags by a compare and a copy
 * (tags_parse_memo; one memo for the process: the event loop's). On TAGS_INVALID, *refusal holds the
 * 22023 error naming the key, or what is wrong with a malformed comment that
 * names an ai_ key (tags.h), with its DETAIL (sent with severity ERROR).
 */
enum tags_result middleware_tags(const char *text, size_t len, struct ai_tags *tags,
                                 struct pg_error *refusal);

/*
 * middleware_tags for the query text[0..len) of a Parse. Before a Parse is
 * relayed its tags are wanted up to three times (the completion cache's
 * look at the batch, admission of the batch's statement, noting the
 * statement's tags), so the last query parsed here (up to
 * MIDDLEWARE_PARSE_MEMO_MAX bytes, when its tags were valid) and its tags
 * are kept, and the same text again gets them by one compare and a copy.
 * One memo for the process: call from the event loop only (not thread-safe).
 */
#define MIDDLEWARE_PARSE_MEMO_MAX 1024
enum tags_result middleware_parse_tags(const char *text, size_t len, struct ai_tags *tags,
                                       struct pg_error *refusal);

/*
 * May the client c describes (role, database, sluice.* settings: filled by
 * the core, ai/context.h) run a statement with tags (NULL: untagged) now? Attributed
 * statements (an ai_ tag, or the client set sluice.user) are checked against
 * tag_trusted_roles (42501) and the subject's limits (53400); the request is
 * counted when admitted. Returns true to run it, false with *refusal filled
 * (an error to send with severity ERROR).
 * When admitted and the tags carry token counts, *usage (if not NULL) gets
 * the usage record to journal once the statement completes (else NULL).
 */
bool middleware_admit(const struct ai_context *c, const struct ai_tags *tags, struct pg_error *refusal,
                      struct usage_pending **usage);

/*
 * The usage record of a completion-cache hit of client c's statement with
 * tags (admitted already): cached = true, subject and model as admission
 * chose them, no tokens and no cost, as no LLM was called (src/ai/README.md).
 * NULL when recording is off or out of memory; owned by the caller.
 */
struct usage_pending *middleware_hit_usage(const struct ai_context *c, const struct ai_tags *tags);

#endif
