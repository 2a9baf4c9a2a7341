/* SPDX-License-Identifier: PostgreSQL */
/*
 * dnscache.c - server host name answers kept for dns_max_ttl /
 * dns_nxdomain_ttl (PgBouncer's config.html "dns_max_ttl"). evdns's
 * getaddrinfo does not report the records' TTL, so an answer is kept for
 * dns_max_ttl itself, the most PgBouncer would keep it.
 */
#include "dnscache.h"

#include <arpa/inet.h>
#include <event2/util.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "sluice.h"
#include "util.h"

struct dns_entry {
	struct dns_entry *next;
	char *host;
	int err;                /* 0, or the EVUTIL_EAI_* of a name that did not exist */
	struct dns_addrs addrs; /* ports 0 */
	usec_t expires;         /* monotonic */
};

struct dnscache {
	struct dns_entry *entries;
};

static void set_port(struct sockaddr_storage *ss, int port)
{
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
	else if (ss->ss_family == AF_INET6)
		((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
}

void dnscache_addrs_from(const struct evutil_addrinfo *res, int port, struct dns_addrs *out)
{
	out->n = 0;
	for (const struct evutil_addrinfo *a = res; a && out->n < DNS_MAX_ADDRS; a = a->ai_next) {
		if (!a->ai_addr || a->ai_addrlen > sizeof(out->addr[0]))
			continue;
		memset(&out->addr[out->n], 0, sizeof(out->addr[0]));
		memcpy(&out->addr[out->n], a->ai_addr, a->ai_addrlen);
		out->len[out->n] = (socklen_t)a->ai_addrlen;
		set_port(&out->addr[out->n], port);
		out->n++;
	}
}

static void entry_free(struct dns_entry *e)
{
	free(e->host);
	free(e);
}

/* Drop the expired entries; returns the cache (NULL until the first store). */
static struct dnscache *pruned(struct sluice *sl)
{
	struct dnscache *dc = sl->dnscache;
	if (!dc)
		return NULL;
	usec_t now = now_usec();
	for (struct dns_entry **pe = &dc->entries; *pe;) {
		struct dns_entry *e = *pe;
		if (e->expires <= now) {
			*pe = e->next;
			entry_free(e);
		} else {
			pe = &e->next;
		}
	}
	return dc;
}

bool dnscache_lookup(struct sluice *sl, const char *host, int port, struct dns_addrs *out, int *err)
{
	struct dnscache *dc = pruned(sl);
	for (struct dns_entry *e = dc ? dc->entries : NULL; e; e = e->next) {
		if (strcmp(e->host, host) != 0)
			continue;
		*err = e->err;
		*out = e->addrs;
		for (int i = 0; i < out->n; i++)
			set_port(&out->addr[i], port);
		return true;
	}
	return false;
}

void dnscache_store(struct sluice *sl, const char *host, const struct evutil_addrinfo *res, int err)
{
	usec_t ttl = err == 0 ? sl->cfg->dns_max_ttl
	             : err == EVUTIL_EAI_NONAME || err == EVUTIL_EAI_NODATA ? sl->cfg->dns_nxdomain_ttl : 0;
	if (ttl <= 0 || (err == 0 && !res))
		return;
	if (!sl->dnscache && !(sl->dnscache = calloc(1, sizeof(struct dnscache))))
		return;
	struct dnscache *dc = pruned(sl);
	struct dns_entry *e;
	for (e = dc->entries; e; e = e->next)
		if (strcmp(e->host, host) == 0)
			break;
	if (!e) {
		e = calloc(1, sizeof(*e));
		if (!e || !(e->host = strdup(host))) {
			free(e);
			return;    /* out of memory: the next connect resolves again */
		}
		e->next = dc->entries;
		dc->entries = e;
	}
	e->err = err;
	dnscache_addrs_from(err == 0 ? res : NULL, 0, &e->addrs);
	e->expires = now_usec() + ttl;
}

void dnscache_each(struct sluice *sl, void (*row)(void *arg, const char *host, long long ttl_s, const char *addrs),
                   void *arg)
{
	struct dnscache *dc = pruned(sl);
	usec_t now = now_usec();
	for (struct dns_entry *e = dc ? dc->entries : NULL; e; e = e->next) {
		char text[DNS_MAX_ADDRS * (INET6_ADDRSTRLEN + 1) + 1] = "";
		size_t used = 0;
		for (int i = 0; i < e->addrs.n; i++) {
			char one[INET6_ADDRSTRLEN] = "";
			const struct sockaddr_storage *ss = &e->addrs.addr[i];
			const void *bin = ss->ss_family == AF_INET ? (const void *)&((const struct sockaddr_in *)ss)->sin_addr
			                  : (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr;
			if (!inet_ntop(ss->ss_family, bin, one, sizeof(one)))
				continue;
			int n = snprintf(text + used, sizeof(text) - used, "%s%s", used ? "," : "", one);
			if (n < 0 || (size_t)n >= sizeof(text) - used)
				break;
			used += (size_t)n;
		}
		row(arg, e->host, (long long)((e->expires - now + USEC_PER_SEC - 1) / USEC_PER_SEC), text);
	}
}

void dnscache_free(struct sluice *sl)
{
	struct dnscache *dc = sl->dnscache;
	if (!dc)
		return;
	sl->dnscache = NULL;
	while (dc->entries) {
		struct dns_entry *e = dc->entries;
		dc->entries = e->next;
		entry_free(e);
	}
	free(dc);
}
