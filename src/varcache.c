/* SPDX-License-Identifier: PostgreSQL */
/* varcache.c - see varcache.h. PgBouncer's varcache idea, pgsluice's code. */
#include "varcache.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "util.h"

/* PostgreSQL reports these with ParameterStatus (GUC_REPORT), so a change by
 * the client is seen in the reply stream and needs no parsing of SET. */
static const char *const builtin_names[] = {
	"client_encoding", "DateStyle", "TimeZone", "IntervalStyle",
	"standard_conforming_strings", "application_name",
};
#define N_BUILTIN ((int)(sizeof(builtin_names) / sizeof(builtin_names[0])))

static char extra_names[VARCACHE_MAX - N_BUILTIN][64];
static int n_extra;

void varcache_set_tracked(const char *extra)
{
	n_extra = 0;
	const char *p = extra;
	while (p && *p && n_extra < VARCACHE_MAX - N_BUILTIN) {
		while (*p == ',' || isspace((unsigned char)*p))
			p++;
		size_t n = 0;
		while (p[n] && p[n] != ',' && !isspace((unsigned char)p[n]))
			n++;
		if (n > 0 && n < sizeof(extra_names[0])) {
			char name[64];
			memcpy(name, p, n);
			name[n] = '\0';
			if (varcache_index(name) < 0)
				memcpy(extra_names[n_extra++], name, n + 1);
		}
		p += n;
	}
}

int varcache_count(void)
{
	return N_BUILTIN + n_extra;
}

const char *varcache_name(int index)
{
	return index < N_BUILTIN ? builtin_names[index] : extra_names[index - N_BUILTIN];
}

int varcache_index(const char *name)
{
	for (int i = 0; i < varcache_count(); i++)
		if (strcasecmp(varcache_name(i), name) == 0)
			return i;
	return -1;
}

static uint64_t last_gen;

/*
 * A set of shared, counted entries (the interned texts and the value
 * vectors below), chained by hash in a power-of-two table that doubles as
 * it fills. Each entry type begins with struct shared_node.
 */
struct shared_node {
	struct shared_node *next;   /* in its bucket */
	uint64_t hash;
	size_t refs;
};

struct shared_set {
	struct shared_node **buckets;
	size_t n_buckets, count;
};

/* The first entry of h's bucket (follow ->next), NULL when none. */
static struct shared_node *set_bucket(const struct shared_set *set, uint64_t h)
{
	return set->n_buckets ? set->buckets[h & (set->n_buckets - 1)] : NULL;
}

/* Room for one more entry: the table doubled when full. False only when there is no table. */
static bool set_room(struct shared_set *set)
{
	if (set->count < set->n_buckets)
		return true;
	size_t n = set->n_buckets ? set->n_buckets * 2 : 64;
	struct shared_node **b = calloc(n, sizeof(*b));
	if (!b)
		return set->n_buckets > 0;    /* a fuller table still works */
	for (size_t i = 0; i < set->n_buckets; i++)
		for (struct shared_node *e = set->buckets[i], *next; e; e = next) {
			next = e->next;
			e->next = b[e->hash & (n - 1)];
			b[e->hash & (n - 1)] = e;
		}
	free(set->buckets);
	set->buckets = b;
	set->n_buckets = n;
	return true;
}

/* Add e (hash and refs set) after set_room said yes. */
static void set_add(struct shared_set *set, struct shared_node *e)
{
	struct shared_node **head = &set->buckets[e->hash & (set->n_buckets - 1)];
	e->next = *head;
	*head = e;
	set->count++;
}

/* Take e out of the set (the caller frees it). */
static void set_remove(struct shared_set *set, struct shared_node *e)
{
	struct shared_node **at = &set->buckets[e->hash & (set->n_buckets - 1)];
	while (*at != e)
		at = &(*at)->next;
	*at = e->next;
	set->count--;
}

/*
 * Values are interned: each distinct text is kept once, with a count of the
 * slots that hold it, so a thousand idle clients with client_encoding UTF8
 * hold one "UTF8" (a malloc'd copy per slot cost ~32 bytes each, five or six
 * per client). The table grows with the distinct texts, not the clients; a
 * text goes when its last slot lets go. Loop thread only.
 */
struct vtext {
	struct shared_node node;    /* first: texts is a set of them */
	char text[];
};

static struct shared_set texts;

static struct vtext *vtext_of(const char *text)
{
	return (struct vtext *)(void *)(text - offsetof(struct vtext, text));
}

/* The shared copy of value with one more holder, or NULL when out of memory. */
static char *intern(const char *value)
{
	size_t len = strlen(value);
	uint64_t h = hash_fnv1a(HASH_FNV1A_BASIS, value, len);
	for (struct shared_node *e = set_bucket(&texts, h); e; e = e->next) {
		struct vtext *t = (struct vtext *)e;
		if (e->hash == h && strcmp(t->text, value) == 0) {
			e->refs++;
			return t->text;
		}
	}
	if (!set_room(&texts))
		return NULL;
	struct vtext *t = malloc(sizeof(*t) + len + 1);
	if (!t)
		return NULL;
	t->node.hash = h;
	t->node.refs = 1;
	memcpy(t->text, value, len + 1);
	set_add(&texts, &t->node);
	return t->text;
}

/* One more holder of an interned text. */
static char *intern_ref(char *text)
{
	vtext_of(text)->node.refs++;
	return text;
}

/* One holder fewer of an interned text (NULL: none); the last frees it. */
static void intern_release(char *text)
{
	if (!text)
		return;
	struct vtext *t = vtext_of(text);
	if (--t->node.refs > 0)
		return;
	set_remove(&texts, &t->node);
	free(t);
}

/*
 * A client's values are a shared vector too: most clients have the same
 * client_encoding, DateStyle, TimeZone, ... as each other, so each distinct
 * set of (interned) values is kept once with a count of the caches that
 * point at it, and struct varcache holds a pointer instead of 16 (120 bytes
 * less per client). A change makes (or finds) another vector. The vector of
 * no values is static and never counted.
 */
struct vvec {
	struct shared_node node;      /* first: vecs is a set of them */
	char *values[VARCACHE_MAX];   /* each holds one reference to its interned text */
};

static struct vvec empty_vec;
static struct shared_set vecs;

static struct vvec *vvec_of(char **values)
{
	return (struct vvec *)(void *)((char *)values - offsetof(struct vvec, values));
}

static uint64_t vvec_hash(char *const values[VARCACHE_MAX])
{
	return hash_fnv1a(HASH_FNV1A_BASIS, values, VARCACHE_MAX * sizeof(values[0]));
}

/*
 * The shared vector holding exactly values (interned texts or NULL; the
 * caller keeps its own references), with one more holder. NULL when out of
 * memory.
 */
static char **vvec_get(char *const values[VARCACHE_MAX])
{
	bool any = false;
	for (int i = 0; i < VARCACHE_MAX; i++)
		any = any || values[i];
	if (!any)
		return empty_vec.values;
	uint64_t h = vvec_hash(values);
	for (struct shared_node *e = set_bucket(&vecs, h); e; e = e->next) {
		struct vvec *v = (struct vvec *)e;
		if (e->hash == h && memcmp(v->values, values, sizeof(v->values)) == 0) {
			e->refs++;
			return v->values;
		}
	}
	if (!set_room(&vecs))
		return NULL;
	struct vvec *v = malloc(sizeof(*v));
	if (!v)
		return NULL;
	v->node.hash = h;
	v->node.refs = 1;
	for (int i = 0; i < VARCACHE_MAX; i++)
		v->values[i] = values[i] ? intern_ref(values[i]) : NULL;
	set_add(&vecs, &v->node);
	return v->values;
}

/* One holder fewer of a vector (NULL or the empty one: nothing); the last frees it. */
static void vvec_release(char **values)
{
	if (!values || values == empty_vec.values)
		return;
	struct vvec *v = vvec_of(values);
	if (--v->node.refs > 0)
		return;
	set_remove(&vecs, &v->node);
	for (int i = 0; i < VARCACHE_MAX; i++)
		intern_release(v->values[i]);
	free(v);
}

/* vc points at the vector of values from now on (a holder already counted). */
static void vc_point(struct varcache *vc, char **values)
{
	vvec_release(vc->values);
	vc->values = values;
}

void varcache_init(struct varcache *vc)
{
	vc->values = empty_vec.values;
	vc->gen = 0;
}

bool varcache_set(struct varcache *vc, const char *name, const char *value)
{
	int i = varcache_index(name);
	if (i < 0)
		return false;
	const char *cur = varcache_get(vc, i);
	if (cur && strcmp(cur, value) == 0)
		return true;
	char *want[VARCACHE_MAX];
	memcpy(want, vc->values ? vc->values : empty_vec.values, sizeof(want));
	if (!(want[i] = intern(value)))
		return false;
	char **v = vvec_get(want);
	intern_release(want[i]);   /* the vector holds its own reference */
	if (!v)
		return false;
	vc_point(vc, v);
	vc->gen = ++last_gen;
	return true;
}

void varcache_clear(struct varcache *vc)
{
	vc_point(vc, empty_vec.values);
	vc->gen = 0;
}

static bool append(char *buf, size_t size, size_t *pos, const char *s, size_t n)
{
	if (*pos + n + 1 > size)
		return false;
	memcpy(buf + *pos, s, n);
	*pos += n;
	buf[*pos] = '\0';
	return true;
}

int varcache_apply_sql(const struct varcache *client, const struct varcache *server,
                       char *buf, size_t size)
{
	size_t pos = 0;
	int count = 0;
	if (size)
		buf[0] = '\0';
	if (client->gen == server->gen)
		return 0;    /* the same values: the usual case of a client taking back its last server */
	for (int i = 0; i < varcache_count(); i++) {
		const char *want = varcache_get(client, i);
		const char *have = varcache_get(server, i);
		const char *name = varcache_name(i);
		if (!want && have) {
			/* another client's value: this one never set it, so it gets the default */
			if (!append(buf, size, &pos, "RESET ", 6) || !append(buf, size, &pos, name, strlen(name)) ||
			    !append(buf, size, &pos, ";", 1))
				return -1;
			count++;
			continue;
		}
		if (!want || (have && strcmp(want, have) == 0))
			continue;
		if (!append(buf, size, &pos, "SET ", 4) || !append(buf, size, &pos, name, strlen(name)) ||
		    !append(buf, size, &pos, "='", 2))
			return -1;
		for (const char *p = want; *p; p++)
			if (!append(buf, size, &pos, p, 1) || (*p == '\'' && !append(buf, size, &pos, "'", 1)))
				return -1;
		if (!append(buf, size, &pos, "';", 2))
			return -1;
		count++;
	}
	return count;
}

bool varcache_copy(struct varcache *dst, const struct varcache *src)
{
	if (dst->values != src->values) {
		char **v = src->values && src->values != empty_vec.values ? src->values : empty_vec.values;
		if (v != empty_vec.values)
			vvec_of(v)->node.refs++;
		vc_point(dst, v);
	}
	dst->gen = src->gen;
	return true;
}

void varcache_fill_missing(struct varcache *dst, const struct varcache *src)
{
	char *want[VARCACHE_MAX];
	memcpy(want, dst->values ? dst->values : empty_vec.values, sizeof(want));
	bool changed = false;
	for (int i = 0; i < varcache_count(); i++)
		if (!want[i] && varcache_get(src, i)) {
			want[i] = src->values[i];
			changed = true;
		}
	if (!changed)
		return;
	char **v = vvec_get(want);
	if (!v)
		return;    /* out of memory: dst keeps what it had */
	vc_point(dst, v);
	dst->gen = ++last_gen;
}
