/* SPDX-License-Identifier: PostgreSQL */
/* varcache.c - see varcache.h. PgBouncer's varcache idea, pgsluice's code. */
#include "varcache.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

bool varcache_set(struct varcache *vc, const char *name, const char *value)
{
	int i = varcache_index(name);
	if (i < 0)
		return false;
	if (vc->values[i] && strcmp(vc->values[i], value) == 0)
		return true;
	char *copy = strdup(value);
	if (!copy)
		return false;
	free(vc->values[i]);
	vc->values[i] = copy;
	vc->gen = ++last_gen;
	return true;
}

void varcache_clear(struct varcache *vc)
{
	for (int i = 0; i < VARCACHE_MAX; i++) {
		free(vc->values[i]);
		vc->values[i] = NULL;
	}
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
		const char *want = client->values[i];
		const char *have = server->values[i];
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
	bool ok = true;
	for (int i = 0; i < varcache_count(); i++) {
		if (!src->values[i]) {
			free(dst->values[i]);
			dst->values[i] = NULL;
		} else {
			ok = varcache_set(dst, varcache_name(i), src->values[i]) && ok;
		}
	}
	if (ok)
		dst->gen = src->gen;
	else
		dst->gen = ++last_gen;
	return ok;
}

void varcache_fill_missing(struct varcache *dst, const struct varcache *src)
{
	for (int i = 0; i < varcache_count(); i++)
		if (!dst->values[i] && src->values[i]) {
			dst->values[i] = strdup(src->values[i]);
			dst->gen = ++last_gen;
		}
}
