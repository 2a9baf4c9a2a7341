/* SPDX-License-Identifier: PostgreSQL */
/*
 * session.h - a client's own AI attribution settings: sluice.user and
 * sluice.model, from the startup "options" parameter or from SET/RESET
 * statements that pgsluice answers itself (docs/ai-middleware.md).
 */
#ifndef SLUICE_AI_SESSION_H
#define SLUICE_AI_SESSION_H

#include <stdbool.h>
#include <stddef.h>

#define AI_NAME_MAX 128   /* bytes, with the NUL */

struct varcache;

struct ai_session {
	char user[AI_NAME_MAX];    /* sluice.user; "" when not set */
	char model[AI_NAME_MAX];   /* sluice.model; "" when not set */
};

enum ai_set_result {
	AI_SET_NONE,       /* not a SET/RESET of a sluice.* setting: forward it */
	AI_SET_DONE,       /* applied; answer CommandComplete with *tag */
	AI_SET_INVALID,    /* a sluice.* setting pgsluice does not know, or a bad value: errbuf says which */
	AI_SET_SHOW,       /* SHOW of a sluice.* setting: answer with ai_session_value() */
};

/*
 * Apply the startup parameter "options" (libpq-connect.html, "options":
 * "-c name=value" / "--name=value" words, "\ " for a space in a word).
 * sluice.user / sluice.model are kept in s; tracked parameters go to vars;
 * a setting named in the comma list ignored (ignore_startup_parameters) is
 * skipped, and every one is when the list names "options" (PgBouncer 1.25's
 * set_startup_options). Any other setting goes to rec (sessvars.h), to be
 * applied on every server the client gets. Returns false with errbuf naming
 * the first word pgsluice cannot honour (not -c/--), or when rec is full.
 */
struct sessvars;
bool ai_session_apply_options(struct ai_session *s, struct varcache *vars, struct sessvars *rec,
                              const char *options, const char *ignored, char *errbuf, size_t errlen);

/*
 * Recognise a simple statement text[0..len) of the forms
 * SET [SESSION] sluice.user {= | TO} {'value' | value | DEFAULT} and
 * RESET sluice.user and SHOW sluice.user (likewise sluice.model), with an
 * optional ';'. Comments count as blanks wherever they stand ("--" to the end
 * of the line, block comments nested, as scan.l reads them); a text with an
 * unterminated block comment is AI_SET_NONE, for PostgreSQL to refuse. The name may be quoted as PostgreSQL allows ("sluice.user",
 * sluice."user"): user is a reserved word, so only the quoted forms also
 * work on a direct connection. On AI_SET_DONE *tag is "SET" or "RESET"
 * (static); on AI_SET_SHOW *tag is the setting's name (static).
 */
enum ai_set_result ai_session_match_set(struct ai_session *s, const char *text, size_t len,
                                        const char **tag, char *errbuf, size_t errlen);

#endif
