/* SPDX-License-Identifier: PostgreSQL */
/*
 * settings.h - session settings under transaction pooling: a client's record
 * (sessvars.h) follows the replies of its SET/RESET statements, transaction
 * blocks commit or discard it, and a server is made to match it at link.
 */
#ifndef SLUICE_SETTINGS_H
#define SLUICE_SETTINGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sessvars.h"

struct client;
struct server;

/* The record c's statements see now: inside a block with SETs, the block's. */
const struct sessvars *settings_current(const struct client *c);

/*
 * The Query or Execute (extended) that carried op completed on s without
 * error (a Query's ReadyForQuery or an Execute's CommandComplete is being
 * relayed; s->tx_status is still the status before it): op enters the
 * client's record, the block's when s was inside a transaction block
 * (sql-set.html: a SET is undone by ROLLBACK). An Execute outside a block
 * runs in the implicit transaction that ends at Sync (protocol-flow.html
 * 55.2.3): its op is kept as a block's, which an ErrorResponse before that
 * ReadyForQuery rolls back. s's record follows. Does not take op. Out of
 * memory or over the limits: s's record is marked in doubt.
 */
void settings_query_done(struct server *s, const struct sessvar_op *op, bool extended);

/* s's client got ErrorResponse: an implicit transaction holding SETs rolls back at Sync. */
void settings_error(struct server *s);

/*
 * s's client, inside a block with SETs, got CommandComplete (body, len
 * bytes): a ROLLBACK (also ROLLBACK TO, and the answer to COMMIT of a
 * failed block) is noted for settings_ready.
 */
void settings_command_complete(struct server *s, const uint8_t *body, size_t len);

/*
 * s sent ReadyForQuery with status now (was: the previous one): a block
 * that ended commits its SETs, or discards them after a ROLLBACK (s's record
 * is then marked in doubt: s went back to a state it did not record). A ROLLBACK
 * TO SAVEPOINT inside a block with SETs keeps them (the record cannot tell
 * which the savepoint undid) and marks s's record in doubt, so the next link
 * of any client starts with RESET ALL.
 */
void settings_ready(struct server *s, char was, char now);

/*
 * The SQL that makes s's settings c's before c's first message on s
 * ("RESET ALL;" when s's record is in doubt or another client ran
 * statements pgsluice cannot follow there, then SET/RESET of the
 * differences). Updates s's record to c's. Returns a malloc'd string, NULL
 * when nothing is to be sent; *failed on OOM. *reset_all when it resets all.
 */
char *settings_link_sql(struct server *s, struct client *c, bool *reset_all, bool *failed);

/* s ran a reset query that reset every setting (DISCARD ALL, RESET ALL): its record is empty. */
void settings_server_reset(struct server *s);

#endif
