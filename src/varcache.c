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
 * Values are interned: each distinct text is kept once, with a count of the
 * slots that hold it, so a thousand idle clients with client_encoding UTF8
 * hold one "UTF8" (a malloc'd copy per slot cost ~32 bytes each, five or six
 * per client). The table grows with the distinct texts, not the clients; a
 * text goes when its last slot lets go. Loop thread only.
 */
struct vtext {
	struct vtext *next;     /* in its bucket */
	uint64_t hash;
	size_t refs;
	char text[];
};

static struct vtext **buckets;
static size_t n_buckets, n_texts;

static struct vtext *vtext_of(const char *text)
{
	return (struct vtext *)(void *)(text - offsetof(struct vtext, text));
}

static bool grow_buckets(void)
{
	size_t n = n_buckets ? n_buckets * 2 : 64;
	struct vtext **b = calloc(n, sizeof(*b));
	if (!b)
		return false;
	for (size_t i = 0; i < n_buckets; i++)
		for (struct vtext *t = buckets[i], *next; t; t = next) {
			next = t->next;
			t->next = b[t->hash & (n - 1)];
			b[t->hash & (n - 1)] = t;
		}
	free(buckets);
	buckets = b;
	n_buckets = n;
	return true;
}

/* The shared copy of value with one more holder, or NULL when out of memory. */
static char *intern(const char *value)
{
	size_t len = strlen(value);
	uint64_t h = hash_fnv1a(HASH_FNV1A_BASIS, value, len);
	if (n_buckets)
		for (struct vtext *t = buckets[h & (n_buckets - 1)]; t; t = t->next)
			if (t->hash == h && strcmp(t->text, value) == 0) {
				t->refs++;
				return t->text;
			}
	if (n_texts >= n_buckets && !grow_buckets() && !n_buckets)
		return NULL;
	struct vtext *t = malloc(sizeof(*t) + len + 1);
	if (!t)
		return NULL;
	t->hash = h;
	t->refs = 1;
	memcpy(t->text, value, len + 1);
	t->next = buckets[h & (n_buckets - 1)];
	buckets[h & (n_buckets - 1)] = t;
	n_texts++;
	return t->text;
}

/* One more holder of an interned text. */
static char *intern_ref(char *text)
{
	vtext_of(text)->refs++;
	return text;
}

/* One holder fewer of an interned text (NULL: none); the last frees it. */
static void intern_release(char *text)
{
	if (!text)
		return;
	struct vtext *t = vtext_of(text);
	if (--t->refs > 0)
		return;
	struct vtext **at = &buckets[t->hash & (n_buckets - 1)];
	while (*at != t)
		at = &(*at)->next;
	*at = t->next;
	n_texts--;
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
	struct vvec *next;      /* in its bucket */
	uint64_t hash;
	size_t refs;
	char *values[VARCACHE_MAX];   /* each holds one reference to its interned text */
};

static struct vvec empty_vec;
static struct vvec **vbuckets;
static size_t n_vbuckets, n_vecs;

static struct vvec *vvec_of(char **values)
{
	return (struct vvec *)(void *)((char *)values - offsetof(struct vvec, values));
}

static uint64_t vvec_hash(char *const values[VARCACHE_MAX])
{
	return hash_fnv1a(HASH_FNV1A_BASIS, values, VARCACHE_MAX * sizeof(values[0]));
}

static bool grow_vbuckets(void)
{
	size_t n = n_vbuckets ? n_vbuckets * 2 : 64;
	struct vvec **b = calloc(n, sizeof(*b));
	if (!b)
		return false;
	for (size_t i = 0; i < n_vbuckets; i++)
		for (struct vvec *v = vbuckets[i], *next; v; v = next) {
			next = v->next;
			v->next = b[v->hash & (n - 1)];
			b[v->hash & (n - 1)] = v;
		}
	free(vbuckets);
	vbuckets = b;
	n_vbuckets = n;
	return true;
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
	if (n_vbuckets)
		for (struct vvec *v = vbuckets[h & (n_vbuckets - 1)]; v; v = v->next)
			if (v->hash == h && memcmp(v->values, values, sizeof(v->values)) == 0) {
				v->refs++;
				return v->values;
			}
	if (n_vecs >= n_vbuckets && !grow_vbuckets() && !n_vbuckets)
		return NULL;
	struct vvec *v = malloc(sizeof(*v));
	if (!v)
		return NULL;
	v->hash = h;
	v->refs = 1;
	for (int i = 0; i < VARCACHE_MAX; i++)
		v->values[i] = values[i] ? intern_ref(values[i]) : NULL;
	v->next = vbuckets[h & (n_vbuckets - 1)];
	vbuckets[h & (n_vbuckets - 1)] = v;
	n_vecs++;
	return v->values;
}

/* One holder fewer of a vector (NULL or the empty one: nothing); the last frees it. */
static void vvec_release(char **values)
{
	if (!values || values == empty_vec.values)
		return;
	struct vvec *v = vvec_of(values);
	if (--v->refs > 0)
		return;
	struct vvec **at = &vbuckets[v->hash & (n_vbuckets - 1)];
	while (*at != v)
		at = &(*at)->next;
	*at = v->next;
	n_vecs--;
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
			vvec_of(v)->refs++;
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
