/* SPDX-License-Identifier: PostgreSQL */
/*
 * settings_ext.h - SET/RESET/set_config() sent through the extended protocol
 * under transaction pooling: each client's statements that are one (with $n
 * parameters), the portals bound to them, and the op an Execute of one records.
 */
#ifndef SLUICE_SETTINGS_EXT_H
#define SLUICE_SETTINGS_EXT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sessvars.h"

struct client;

/* Bounds per client: past them the client is tainted (not followed; RESET ALL at the next client). */
#define SETTINGS_EXT_MAX_STMTS 64
#define SETTINGS_EXT_MAX_PORTALS 16

/*
 * Parse of statement name (client's name, "" unnamed) with text query,
 * under transaction or statement pooling. A statement that is one
 * SET/RESET/set_config() (sessvars_parse_template) is kept. A named
 * statement already kept with another text (the Parse then fails with
 * 42P05, or the name was dropped with SQL DEALLOCATE) taints c. Idempotent
 * for the same name and text. Returns true when query is kept (it changes
 * settings pgsluice follows), false when the caller judges it as before.
 */
bool settings_ext_parse(struct client *c, const char *name, const char *query);

/* Does c keep a SET statement named name (settings_ext_parse)? Cheap: false when it keeps none. */
bool settings_ext_has(const struct client *c, const char *name);

/*
 * Bind (body[0..len), protocol-message-formats.html) of c: a portal of a
 * kept statement gets its op (parameters in text format, else c is
 * tainted); any other Bind of that portal name drops the portal's op.
 */
void settings_ext_bind(struct client *c, const uint8_t *body, size_t len);

/* Does c keep any statement or portal (so that its Binds, Executes and Closes are looked at)? */
bool settings_ext_active(const struct client *c);

/*
 * A Bind of c names portal and stmt: the portal's op is dropped. Returns
 * true when stmt is kept, so the whole Bind goes to settings_ext_bind.
 */
bool settings_ext_binds(struct client *c, const char *portal, const char *stmt);

/* Close ('S' statement or 'P' portal, name) of c: forget it. */
void settings_ext_close(struct client *c, char what, const char *name);

/*
 * Execute of portal by c: a copy of the op it records when it completes
 * without error (malloc'd, the caller's), or NULL (no SET, or OOM: c is then
 * tainted).
 */
struct sessvar_op *settings_ext_execute(struct client *c, const char *portal);

/* Free c's statements and portals (client teardown). */
void settings_ext_free(struct client *c);

#endif
