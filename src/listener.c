/* SPDX-License-Identifier: PostgreSQL */
/* listener.c - see listener.h. */
#include "listener.h"

#include <errno.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netdb.h>
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

static void accept_cb(struct evconnlistener *ev, evutil_socket_t fd, struct sockaddr *addr,
                      int len, void *arg)
{
	struct listener *l = arg;
	(void)ev;
	client_accept(l->sl, fd, addr, (socklen_t)len);
}

static void accept_error_cb(struct evconnlistener *ev, void *arg)
{
	(void)ev;
	(void)arg;
	/* EMFILE and friends: log; libevent retries on the next readiness. */
	log_warning("accept() failed: %s", evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
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
	log_info("listening on unix socket %s", un.sun_path);
	return add_listener(sl, fd, un.sun_path, errbuf, errlen);
}

bool listener_start(struct sluice *sl, char *errbuf, size_t errlen)
{
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
	return true;
}

void listener_set_accepting(struct sluice *sl, bool on)
{
	for (struct listener *l = sl->listeners; l; l = l->next)
		if (on)
			evconnlistener_enable(l->ev);
		else
			evconnlistener_disable(l->ev);
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
	while ((l = sl->listeners) != NULL) {
		sl->listeners = l->next;
		evconnlistener_free(l->ev);
		if (l->unix_path)
			unlink(l->unix_path);
		free(l->unix_path);
		free(l);
	}
}
