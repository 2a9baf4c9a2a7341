/* SPDX-License-Identifier: PostgreSQL */
/* util.c - see util.h. */
#include "util.h"

#include <ctype.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <openssl/crypto.h>

static usec_t held_now;   /* the clock at the start of the current connection callback */
static int holding;

static usec_t read_clock(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (usec_t)ts.tv_sec * USEC_PER_SEC + ts.tv_nsec / 1000;
}

usec_t now_usec(void)
{
	return holding ? held_now : read_clock();
}

void now_hold(void)
{
	if (holding++ == 0)
		held_now = read_clock();
}

void now_release(void)
{
	holding--;
}

usec_t wall_usec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (usec_t)ts.tv_sec * USEC_PER_SEC + ts.tv_nsec / 1000;
}

char *str_copy(char *dst, const char *src, size_t size)
{
	if (size == 0)
		return dst;
	size_t n = strnlen(src, size - 1);
	memcpy(dst, src, n);
	dst[n] = '\0';
	return dst;
}

char *str_dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

bool str_list_contains(const char *list, const char *name)
{
	size_t want = strlen(name);
	const char *p = list;
	while (p && *p) {
		while (*p == ',' || isspace((unsigned char)*p))
			p++;
		const char *start = p;
		while (*p && *p != ',' && !isspace((unsigned char)*p))
			p++;
		if ((size_t)(p - start) == want && want > 0 && strncasecmp(start, name, want) == 0)
			return true;
	}
	return false;
}

bool timer_add_usec(struct event *ev, usec_t every)
{
	struct timeval tv = { (time_t)(every / USEC_PER_SEC), (suseconds_t)(every % USEC_PER_SEC) };
	return event_add(ev, &tv) == 0;
}

/* setsockopt of one int when it is set (> 0). */
static void set_int_option(int fd, int level, int name, int value)
{
	if (value > 0)
		setsockopt(fd, level, name, &value, sizeof(value));
}

void socket_tune(int fd, const struct sluice_config *cfg)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0 || ss.ss_family == AF_UNIX)
		return;
	set_int_option(fd, IPPROTO_TCP, TCP_NODELAY, 1);
	if (cfg->tcp_keepalive) {
		set_int_option(fd, SOL_SOCKET, SO_KEEPALIVE, 1);
		set_int_option(fd, IPPROTO_TCP, TCP_KEEPIDLE, cfg->tcp_keepidle);
		set_int_option(fd, IPPROTO_TCP, TCP_KEEPINTVL, cfg->tcp_keepintvl);
		set_int_option(fd, IPPROTO_TCP, TCP_KEEPCNT, cfg->tcp_keepcnt);
	}
	set_int_option(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, cfg->tcp_user_timeout);
	set_int_option(fd, SOL_SOCKET, SO_SNDBUF, cfg->tcp_socket_buffer);
	set_int_option(fd, SOL_SOCKET, SO_RCVBUF, cfg->tcp_socket_buffer);
}

uint64_t socket_id_next(void)
{
	static uint64_t next_id = 1;
	return next_id++;
}

uint64_t hash_fnv1a(uint64_t h, const void *data, size_t len)
{
	const unsigned char *p = data;
	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 1099511628211ULL;   /* the 64-bit FNV prime, 2^40 + 2^8 + 0xb3 */
	}
	return h;
}

void free_secret(char *s)
{
	if (!s)
		return;
	OPENSSL_cleanse(s, strlen(s));
	free(s);
}
