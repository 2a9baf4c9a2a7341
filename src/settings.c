/* SPDX-License-Identifier: PostgreSQL */
/* settings.c - see settings.h. */
#include "settings.h"

#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "log.h"
#include "server.h"

const struct sessvars *settings_current(const struct client *c)
{
	return c->settings_in_tx ? c->settings_tx : &c->settings;
}

/* s's record is in doubt: the next link resets all and applies the client's record. */
static void server_in_doubt(struct server *s, const char *why)
{
	log_debug("S-%llu: recorded settings in doubt (%s): RESET ALL at next link", (unsigned long long)s->id, why);
	s->settings_reset_all = true;
	sessvars_invalidate(&s->settings);
}

void settings_query_done(struct server *s, const struct sessvar_op *op, bool extended)
{
	struct client *c = s->client;
	if (!c)
		return;
	struct sessvars *rec = &c->settings;
	if (extended && s->tx_status == 'I')
		s->settings_implicit = true;    /* until the ReadyForQuery of its Sync (settings_ready) */
	if (s->tx_status != 'I' || s->settings_implicit) {
		if (!c->settings_in_tx) {
			/* the block's record lives only as long as the block */
			if (!c->settings_tx && !(c->settings_tx = calloc(1, sizeof(*c->settings_tx)))) {
				server_in_doubt(s, "out of memory");
				return;
			}
			if (!sessvars_copy(c->settings_tx, &c->settings)) {
				server_in_doubt(s, "out of memory");
				return;
			}
			c->settings_in_tx = true;
		}
		rec = c->settings_tx;
	}
	int rc = sessvars_apply(rec, c->settings_startup, op);
	if (rc != 0) {
		log_warning("C-%llu: setting \"%s\" not recorded: %s", (unsigned long long)c->id,
		            op->name ? op->name : "ALL", rc == -2 ? "record full" : "out of memory");
		server_in_doubt(s, "a setting not recorded");
		return;
	}
	if (s->settings_reset_all)
		return;
	/* The server's RESET goes to PostgreSQL's default, not to the client's
	 * startup value (pgsluice's own startup packet did not carry it): s's
	 * record says what s has, and the next link sets the startup value. */
	if (sessvars_apply(&s->settings, NULL, op) != 0)
		server_in_doubt(s, "out of memory");
	else if (sessvars_equal(&s->settings, rec))
		s->settings.gen = rec->gen;     /* the usual case: the next link of c compares one number */
}

void settings_command_complete(struct server *s, const uint8_t *body, size_t len)
{
	if (len >= 8 && memcmp(body, "ROLLBACK", 8) == 0)
		s->saw_rollback = true;   /* the block's SETs are undone (settings_ready) */
}

void settings_error(struct server *s)
{
	if (s->settings_implicit)
		s->saw_rollback = true;     /* the implicit transaction ends in a rollback at Sync */
}

/* The block is over: its record goes (an idle client keeps none). */
static void drop_tx_record(struct client *c)
{
	if (c->settings_tx) {
		sessvars_clear(c->settings_tx);
		free(c->settings_tx);
		c->settings_tx = NULL;
	}
}

void settings_ready(struct server *s, char was, char now)
{
	struct client *c = s->client;
	bool rollback = s->saw_rollback;
	s->saw_rollback = false;
	s->settings_implicit = false;
	if (!c)
		return;
	if (now == 'I')
		c->settings_local = false;
	if (!c->settings_in_tx)
		return;
	if (now != 'I') {
		if (rollback && was != 'I')
			server_in_doubt(s, "ROLLBACK TO SAVEPOINT in a block with SETs");   /* kept: commit at end */
		return;
	}
	c->settings_in_tx = false;
	if (rollback) {
		/* s is back where it was before the block, which its record no longer says */
		drop_tx_record(c);
		server_in_doubt(s, "ROLLBACK of a block with SETs");
		return;
	}
	/* committed: the block's record is the client's */
	struct sessvars t = c->settings;
	c->settings = *c->settings_tx;
	*c->settings_tx = t;
	drop_tx_record(c);
}

char *settings_link_sql(struct server *s, struct client *c, bool *reset_all, bool *failed)
{
	*failed = false;
	*reset_all = s->settings_reset_all || (s->settings_dirty && s->settings_owner != c->id);
	s->settings_owner = c->id;
	if (!*reset_all && s->settings.gen == c->settings.gen)
		return NULL;     /* the usual case: no settings, or c back on the server it left */
	if (!*reset_all && sessvars_equal(&s->settings, &c->settings)) {
		s->settings.gen = c->settings.gen;   /* clients with the same settings: nothing to send or copy */
		return NULL;
	}
	int count;
	char *sql = sessvars_diff_sql(&c->settings, &s->settings, *reset_all, &count);
	if (!sql || !sessvars_copy(&s->settings, &c->settings)) {
		free(sql);
		*failed = true;
		return NULL;
	}
	if (*reset_all) {
		s->settings_reset_all = false;
		s->settings_dirty = false;
	}
	if (count == 0) {
		free(sql);
		return NULL;
	}
	return sql;
}

void settings_server_reset(struct server *s)
{
	sessvars_clear(&s->settings);
	s->settings_reset_all = false;
	s->settings_dirty = false;
}
