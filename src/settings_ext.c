/* SPDX-License-Identifier: PostgreSQL */
/* settings_ext.c - see settings_ext.h. */
#include "settings_ext.h"

#include <stdlib.h>
#include <string.h>

#include "client.h"
#include "log.h"
#include "proto.h"

struct ext_entry {
	char *name;                 /* owned */
	char *query;                /* statements: the text, to know a re-Parse of it; owned */
	struct sessvar_op op;       /* statement: the template; portal: the bound op; strings owned */
};

struct settings_ext {
	struct ext_entry stmts[SETTINGS_EXT_MAX_STMTS];
	size_t n_stmts;
	struct ext_entry portals[SETTINGS_EXT_MAX_PORTALS];
	size_t n_portals;
};

/* c's statements may change settings pgsluice does not follow: another client's next link resets all. */
static void taint(struct client *c, const char *why)
{
	if (!c->settings_tainted)
		log_debug("C-%llu: extended-protocol settings not followed (%s)", (unsigned long long)c->id, why);
	c->settings_tainted = true;
}

static struct ext_entry *find(struct ext_entry *items, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(items[i].name, name) == 0)
			return &items[i];
	return NULL;
}

static void drop(struct ext_entry *items, size_t *n, struct ext_entry *e)
{
	free(e->name);
	free(e->query);
	sessvar_op_free(&e->op);
	*e = items[--*n];
}

static struct settings_ext *ext_of(struct client *c)
{
	if (!c->settings_ext)
		c->settings_ext = calloc(1, sizeof(*c->settings_ext));
	return c->settings_ext;
}

bool settings_ext_has(const struct client *c, const char *name)
{
	struct settings_ext *x = c->settings_ext;
	return x && x->n_stmts > 0 && find(x->stmts, x->n_stmts, name) != NULL;
}

bool settings_ext_parse(struct client *c, const char *name, const char *query)
{
	struct settings_ext *x = c->settings_ext;
	struct ext_entry *old = x ? find(x->stmts, x->n_stmts, name) : NULL;
	if (old && name[0]) {
		if (strcmp(old->query, query) == 0)
			return true;     /* the same Parse again (or seen before its server was linked) */
		/* the Parse fails with 42P05 and old stays, or SQL dropped old: pgsluice cannot tell */
		taint(c, "a statement name reused");
		drop(x->stmts, &x->n_stmts, old);
		return false;
	}
	if (old)
		drop(x->stmts, &x->n_stmts, old);     /* the unnamed statement is replaced */
	struct sessvar_op op;
	switch (sessvars_parse_template(query, strlen(query), &op)) {
	case SESSVAR_SET:
	case SESSVAR_SET_STRING:
	case SESSVAR_RESET:
	case SESSVAR_RESET_ALL:
		break;
	default:
		sessvar_op_free(&op);
		return false;
	}
	x = ext_of(c);
	if (!x || x->n_stmts == SETTINGS_EXT_MAX_STMTS) {
		sessvar_op_free(&op);
		taint(c, x ? "too many SET statements" : "out of memory");
		return false;
	}
	struct ext_entry *e = &x->stmts[x->n_stmts];
	e->name = strdup(name);
	e->query = strdup(query);
	if (!e->name || !e->query) {
		free(e->name);
		free(e->query);
		sessvar_op_free(&op);
		taint(c, "out of memory");
		return false;
	}
	e->op = op;
	x->n_stmts++;
	return true;
}

/* Drop portal's op; an unnamed one is replaced by every Bind. */
static void forget_portal(struct settings_ext *x, const char *portal)
{
	struct ext_entry *p = x ? find(x->portals, x->n_portals, portal) : NULL;
	if (p)
		drop(x->portals, &x->n_portals, p);
}

void settings_ext_bind(struct client *c, const uint8_t *body, size_t len)
{
	struct settings_ext *x = c->settings_ext;
	if (!x)
		return;
	struct msgreader r;
	mr_init(&r, body, len);
	const char *portal = mr_string(&r);
	const char *stmt = mr_string(&r);
	if (r.bad)
		return;     /* PostgreSQL refuses it */
	forget_portal(x, portal);
	struct ext_entry *st = find(x->stmts, x->n_stmts, stmt);
	if (!st)
		return;
	int16_t n_formats = mr_int16(&r);
	bool binary = false;
	for (int16_t i = 0; i < n_formats && !r.bad; i++)
		binary = binary || mr_int16(&r) != 0;
	int16_t n_params = mr_int16(&r);
	if (r.bad || n_formats < 0 || n_params < 0) {
		taint(c, "unreadable Bind");
		return;
	}
	const char **values = n_params ? calloc((size_t)n_params, sizeof(*values)) : NULL;
	uint32_t *lens = n_params ? calloc((size_t)n_params, sizeof(*lens)) : NULL;
	if (n_params && (!values || !lens)) {
		free(values);
		free(lens);
		taint(c, "out of memory");
		return;
	}
	for (int16_t i = 0; i < n_params && !r.bad; i++) {
		int32_t n = mr_int32(&r);
		if (n >= 0) {
			values[i] = (const char *)mr_bytes(&r, (size_t)n);
			lens[i] = (uint32_t)n;
		}
	}
	struct sessvar_op op = { 0 };
	enum sessvar_kind k = SESSVAR_UNKNOWN;
	/* binary parameters: their meaning is their type's; pgsluice reads only text */
	if (!r.bad && !binary)
		k = sessvars_bind(&st->op, (uint16_t)n_params, values, lens, &op);
	free(values);
	free(lens);
	if (k != SESSVAR_SET && k != SESSVAR_SET_STRING && k != SESSVAR_RESET && k != SESSVAR_RESET_ALL) {
		sessvar_op_free(&op);
		taint(c, "a SET statement bound to what pgsluice cannot follow");
		return;
	}
	if (x->n_portals == SETTINGS_EXT_MAX_PORTALS) {
		sessvar_op_free(&op);
		taint(c, "too many SET portals");
		return;
	}
	struct ext_entry *p = &x->portals[x->n_portals];
	p->name = strdup(portal);
	p->query = NULL;
	if (!p->name) {
		sessvar_op_free(&op);
		taint(c, "out of memory");
		return;
	}
	p->op = op;
	x->n_portals++;
}

bool settings_ext_active(const struct client *c)
{
	return c->settings_ext && (c->settings_ext->n_stmts || c->settings_ext->n_portals);
}

bool settings_ext_binds(struct client *c, const char *portal, const char *stmt)
{
	struct settings_ext *x = c->settings_ext;
	if (!x)
		return false;
	forget_portal(x, portal);
	return find(x->stmts, x->n_stmts, stmt) != NULL;
}

void settings_ext_close(struct client *c, char what, const char *name)
{
	struct settings_ext *x = c->settings_ext;
	if (!x)
		return;
	if (what == 'P') {
		forget_portal(x, name);
		return;
	}
	struct ext_entry *st = find(x->stmts, x->n_stmts, name);
	if (st)
		drop(x->stmts, &x->n_stmts, st);
}

struct sessvar_op *settings_ext_execute(struct client *c, const char *portal)
{
	struct settings_ext *x = c->settings_ext;
	struct ext_entry *p = x ? find(x->portals, x->n_portals, portal) : NULL;
	if (!p)
		return NULL;
	struct sessvar_op *op = sessvar_op_dup(&p->op);
	if (!op)
		taint(c, "out of memory");
	return op;
}

void settings_ext_free(struct client *c)
{
	struct settings_ext *x = c->settings_ext;
	if (!x)
		return;
	while (x->n_stmts)
		drop(x->stmts, &x->n_stmts, &x->stmts[0]);
	while (x->n_portals)
		drop(x->portals, &x->n_portals, &x->portals[0]);
	free(x);
	c->settings_ext = NULL;
}
