/* SPDX-License-Identifier: PostgreSQL */
/* listener.c - see listener.h. */
#include "listener.h"

#include <errno.h>
#include <grp.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "client.h"
#include "log.h"
#include "sluice.h"
#include "util.h"

struct listener {
	struct listener *next;
	struct evconnlistener *ev;
	char *unix_path;          /* owned; the socket file to remove, or NULL */
	struct sluice *sl;
};

/* After EMFILE/ENFILE the listeners rest this long, doubling up to the cap. */
#define ACCEPT_BACKOFF_FIRST  (100 * USEC_PER_MSEC)
#define ACCEPT_BACKOFF_MAX    (1 * USEC_PER_SEC)
/* While accept() keeps failing, one log line per this long at most. */
#define ACCEPT_LOG_INTERVAL   (10 * USEC_PER_SEC)
/*
 * tcp_defer_accept's delay in seconds: PgBouncer's fixed value. A client speaks
 * first in PostgreSQL's protocol, so the kernel wakes us only once its
 * startup packet is there (tcp(7) TCP_DEFER_ACCEPT).
 */
#define DEFER_ACCEPT_SECONDS  45
/* A client that sent no StartupMessage in this long may make way for a new one. */
#define SILENT_LOGIN_AGE      (1 * USEC_PER_SEC)

static void set_enabled(struct sluice *sl, bool on)
{
	if (on == sl->accepting)
		return;
	for (struct listener *l = sl->listeners; l; l = l->next)
		if (on)
			evconnlistener_enable(l->ev);
		else
			evconnlistener_disable(l->ev);
	sl->accepting = on;
}

static bool backing_off(struct sluice *sl)
{
	return sl->accept_retry && evtimer_pending(sl->accept_retry, NULL);
}

void listener_update(struct sluice *sl)
{
	set_enabled(sl, !sl->accept_suspended && !backing_off(sl) &&
	                sl->n_login_clients < sl->cfg->max_login_clients);
}

void listener_make_room(struct sluice *sl)
{
	/* Sockets that have said nothing for a while make way for new ones:
	 * a flood of idle connections must not lock out a real client. */
	while (sl->n_login_clients >= sl->cfg->max_login_clients &&
	       client_close_oldest_silent(sl, SILENT_LOGIN_AGE))
		;
	listener_update(sl);
}

static void log_accept_failures(struct sluice *sl, const char *what)
{
	log_warning("accept() failed %lu time%s: %s; not accepting new connections for %lld ms",
	            sl->accept_failures, sl->accept_failures == 1 ? "" : "s", what,
	            (long long)(sl->accept_backoff / USEC_PER_MSEC));
	sl->accept_failures = 0;
	sl->accept_failure_logged = now_usec();
	sl->accept_failure_told = true;
}

static void accept_cb(struct evconnlistener *ev, evutil_socket_t fd, struct sockaddr *addr,
                      int len, void *arg)
{
	struct listener *l = arg;
	struct sluice *sl = l->sl;
	(void)ev;
	/* one "again" line per failure line: at most two lines per ACCEPT_LOG_INTERVAL */
	if (sl->accept_failure_told) {
		log_info("accepting connections again (%lu more failed accept() calls)", sl->accept_failures);
		sl->accept_failures = 0;
		sl->accept_failure_told = false;
	}
	sl->accept_backoff = 0;   /* a socket came: the next failure starts short again */
	client_accept(sl, fd, addr, (socklen_t)len);
	listener_make_room(sl);
}

static void accept_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	listener_update(arg);
}

/*
 * accept() failed with something other than "try again": usually EMFILE or
 * ENFILE. The connection stays in the kernel's queue, so the listener would
 * fire again at once and spin; pause every listener for a back-off (100 ms,
 * doubling to 1 s while failures go on; PgBouncer pauses 5 s) and log once
 * per ACCEPT_LOG_INTERVAL with the count. Without a timer (out of memory)
 * the janitor's listener_update resumes them.
 */
static void accept_error_cb(struct evconnlistener *ev, void *arg)
{
	struct listener *l = arg;
	struct sluice *sl = l->sl;
	int err = EVUTIL_SOCKET_ERROR();
	(void)ev;
	sl->accept_backoff = sl->accept_backoff ? sl->accept_backoff * 2 : ACCEPT_BACKOFF_FIRST;
	if (sl->accept_backoff > ACCEPT_BACKOFF_MAX)
		sl->accept_backoff = ACCEPT_BACKOFF_MAX;
	sl->accept_failures++;
	if (!sl->accept_failure_logged || now_usec() - sl->accept_failure_logged >= ACCEPT_LOG_INTERVAL)
		log_accept_failures(sl, evutil_socket_error_to_string(err));
	if (!sl->accept_retry)
		sl->accept_retry = evtimer_new(sl->base, accept_retry_cb, sl);
	if (sl->accept_retry) {
		struct timeval tv = { (time_t)(sl->accept_backoff / USEC_PER_SEC),
		                      (suseconds_t)(sl->accept_backoff % USEC_PER_SEC) };
		evtimer_add(sl->accept_retry, &tv);
	}
	set_enabled(sl, false);
}

static bool add_listener(struct sluice *sl, int fd, const char *unix_path, char *errbuf, size_t errlen)
{
	struct listener *l = calloc(1, sizeof(*l));
	if (!l) {
		close(fd);
		snprintf(errbuf, errlen, "out of memory");
		return false;
	}
	l->sl = sl;
	l->ev = evconnlistener_new(sl->base, accept_cb, l, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
	                           sl->cfg->listen_backlog, fd);
	if (!l->ev) {
		close(fd);
		free(l);
		snprintf(errbuf, errlen, "could not create listener");
		return false;
	}
	evconnlistener_set_error_cb(l->ev, accept_error_cb);
	l->unix_path = str_dup_or_null(unix_path);
	l->next = sl->listeners;
	sl->listeners = l;
	return true;
}

static int bound_socket(const struct sockaddr *addr, socklen_t len, bool reuseport, char *errbuf, size_t errlen,
                        const char *what)
{
	int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int on = 1;
	if (fd < 0) {
		snprintf(errbuf, errlen, "could not create socket for %s: %s", what, strerror(errno));
		return -1;
	}
	if (addr->sa_family != AF_UNIX) {
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
		if (reuseport)
			setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on));
		if (addr->sa_family == AF_INET6)
			setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
	}
	if (bind(fd, addr, len) != 0) {
		snprintf(errbuf, errlen, "could not bind %s: %s", what, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static bool listen_tcp(struct sluice *sl, const char *host, char *errbuf, size_t errlen)
{
	struct addrinfo hints, *res, *ai;
	char port[16];
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE;
	snprintf(port, sizeof(port), "%d", sl->cfg->listen_port);
	int rc = getaddrinfo(strcmp(host, "*") == 0 ? NULL : host, port, &hints, &res);
	if (rc != 0) {
		snprintf(errbuf, errlen, "could not resolve listen_addr \"%s\": %s", host, gai_strerror(rc));
		return false;
	}
	bool ok = true;
	for (ai = res; ai && ok; ai = ai->ai_next) {
		char what[300];
		snprintf(what, sizeof(what), "%s:%s", host, port);
		int fd = bound_socket(ai->ai_addr, ai->ai_addrlen, sl->cfg->so_reuseport, errbuf, errlen, what);
		/* "*" on a host without IPv6 still works on IPv4 */
		if (fd < 0 && strcmp(host, "*") == 0 && ai->ai_family == AF_INET6)
			continue;
		ok = fd >= 0 && add_listener(sl, fd, NULL, errbuf, errlen);
		if (ok)
			log_info("listening on %s (%s)", what, ai->ai_family == AF_INET6 ? "IPv6" : "IPv4");
	}
	freeaddrinfo(res);
	return ok;
}

/* A socket file another process still accepts on must not be taken over. */
static bool socket_in_use(const struct sockaddr_un *un)
{
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	if (fd < 0)
		return false;
	bool used = connect(fd, (const struct sockaddr *)un, sizeof(*un)) == 0;
	close(fd);
	return used;
}

/* unix_socket_group: hand the socket file to that group (before privileges are dropped). */
static bool give_group(const char *path, const char *group, char *errbuf, size_t errlen)
{
	if (!group || !*group)
		return true;
	struct group *gr = getgrnam(group);
	if (!gr) {
		snprintf(errbuf, errlen, "unix_socket_group \"%s\" does not exist", group);
		return false;
	}
	if (chown(path, (uid_t)-1, gr->gr_gid) != 0) {
		snprintf(errbuf, errlen, "could not give unix socket \"%s\" to group \"%s\": %s", path, group,
		         strerror(errno));
		return false;
	}
	return true;
}

static bool listen_unix(struct sluice *sl, char *errbuf, size_t errlen)
{
	struct sockaddr_un un;
	memset(&un, 0, sizeof(un));
	un.sun_family = AF_UNIX;
	int n = snprintf(un.sun_path, sizeof(un.sun_path), "%s/.s.PGSQL.%d", sl->cfg->unix_socket_dir,
	                 sl->cfg->listen_port);
	if (n < 0 || (size_t)n >= sizeof(un.sun_path)) {
		snprintf(errbuf, errlen, "unix_socket_dir \"%s\" is too long", sl->cfg->unix_socket_dir);
		return false;
	}
	if (socket_in_use(&un)) {
		snprintf(errbuf, errlen, "unix socket \"%s\" is in use by another process", un.sun_path);
		return false;
	}
	unlink(un.sun_path);
	int fd = bound_socket((struct sockaddr *)&un, sizeof(un), false, errbuf, errlen, un.sun_path);
	if (fd < 0)
		return false;
	chmod(un.sun_path, (mode_t)sl->cfg->unix_socket_mode);
	if (!give_group(un.sun_path, sl->cfg->unix_socket_group, errbuf, errlen)) {
		close(fd);
		unlink(un.sun_path);
		return false;
	}
	log_info("listening on unix socket %s", un.sun_path);
	return add_listener(sl, fd, un.sun_path, errbuf, errlen);
}

bool listener_start(struct sluice *sl, char *errbuf, size_t errlen)
{
	sl->login_slot_free = listener_update;
	const char *p = sl->cfg->listen_addr;
	while (p && *p) {
		while (*p == ',' || *p == ' ')
			p++;
		size_t n = strcspn(p, ", ");
		if (n == 0)
			break;
		char host[256];
		if (n >= sizeof(host)) {
			snprintf(errbuf, errlen, "listen_addr entry too long");
			listener_stop(sl);
			return false;
		}
		memcpy(host, p, n);
		host[n] = '\0';
		p += n;
		if (!listen_tcp(sl, host, errbuf, errlen)) {
			listener_stop(sl);
			return false;
		}
	}
	if (sl->cfg->unix_socket_dir[0] && !listen_unix(sl, errbuf, errlen)) {
		listener_stop(sl);
		return false;
	}
	if (!sl->listeners) {
		snprintf(errbuf, errlen, "nothing to listen on: set listen_addr or unix_socket_dir");
		return false;
	}
	sl->accepting = true;   /* evconnlistener_new enables them */
	listener_apply_settings(sl);
	listener_update(sl);
	return true;
}

void listener_apply_settings(struct sluice *sl)
{
#ifdef TCP_DEFER_ACCEPT
	int secs = sl->cfg->tcp_defer_accept ? DEFER_ACCEPT_SECONDS : 0;
	for (struct listener *l = sl->listeners; l; l = l->next) {
		if (l->unix_path)
			continue;
		int fd = evconnlistener_get_fd(l->ev);
		if (setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &secs, sizeof(secs)) != 0)
			log_warning("could not set TCP_DEFER_ACCEPT: %s", strerror(errno));
	}
#else
	(void)sl;
#endif
}

void listener_set_accepting(struct sluice *sl, bool on)
{
	sl->accept_suspended = !on;
	listener_update(sl);
}

void listener_stop_tcp(struct sluice *sl)
{
	struct listener **link = &sl->listeners;
	while (*link) {
		struct listener *l = *link;
		if (l->unix_path) {
			link = &l->next;
			continue;
		}
		*link = l->next;
		evconnlistener_free(l->ev);
		free(l);
	}
}

void listener_stop(struct sluice *sl)
{
	struct listener *l;
	if (sl->accept_retry) {
		event_free(sl->accept_retry);
		sl->accept_retry = NULL;
	}
	while ((l = sl->listeners) != NULL) {
		sl->listeners = l->next;
		evconnlistener_free(l->ev);
		if (l->unix_path)
			unlink(l->unix_path);
		free(l->unix_path);
		free(l);
	}
}

void listener_foreach_fd(struct sluice *sl, void (*fn)(int fd, void *arg), void *arg)
{
	for (struct listener *l = sl->listeners; l; l = l->next)
		fn(evconnlistener_get_fd(l->ev), arg);
}
