/* SPDX-License-Identifier: PostgreSQL */
/*
 * dnscache.h - the answers of server host name lookups, kept for dns_max_ttl
 * (addresses) or dns_nxdomain_ttl (a name that does not exist), as PgBouncer
 * does; SHOW DNS_HOSTS lists them. The lookups themselves are server.c's (evdns).
 */
#ifndef SLUICE_DNSCACHE_H
#define SLUICE_DNSCACHE_H

#include <event2/util.h>
#include <stdbool.h>
#include <sys/socket.h>

struct sluice;

/* The most addresses kept for one name; a longer answer keeps its first ones. */
#define DNS_MAX_ADDRS 16

/* The addresses of one name, tried in order (the port is the caller's). */
struct dns_addrs {
	int n;
	struct sockaddr_storage addr[DNS_MAX_ADDRS];
	socklen_t len[DNS_MAX_ADDRS];
};

/*
 * A fresh answer for host, if one is kept: true with *out filled (each
 * address with port, host byte order) and *err 0, or true with *err the
 * lookup's EVUTIL_EAI_* error for a name that did not exist; false when
 * there is none (the caller resolves and calls dnscache_store).
 */
bool dnscache_lookup(struct sluice *sl, const char *host, int port, struct dns_addrs *out, int *err);

/*
 * Keep the answer of a lookup of host: res (borrowed; may be NULL) when err
 * is 0, for dns_max_ttl; err EVUTIL_EAI_NONAME or EVUTIL_EAI_NODATA for
 * dns_nxdomain_ttl; any other error (a timeout, a server failure) is not
 * kept. A TTL of 0 keeps nothing. Expired entries are dropped on the way,
 * so the cache holds at most the names of the configuration.
 */
void dnscache_store(struct sluice *sl, const char *host, const struct evutil_addrinfo *res, int err);

/* Copy the addresses of res (borrowed) into out, with port; out->n is 0 for none. */
void dnscache_addrs_from(const struct evutil_addrinfo *res, int port, struct dns_addrs *out);

/*
 * Call row(arg, host, ttl_s, addrs) for each fresh entry: its seconds left,
 * and its addresses as text, comma-separated ("" for a name that did not
 * exist). For SHOW DNS_HOSTS (PgBouncer's columns hostname, ttl, addrs).
 */
void dnscache_each(struct sluice *sl, void (*row)(void *arg, const char *host, long long ttl_s, const char *addrs),
                   void *arg);

/* Drop every entry (a reload that changes dns_max_ttl or dns_nxdomain_ttl, shutdown). */
void dnscache_free(struct sluice *sl);

#endif
