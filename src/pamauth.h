/* SPDX-License-Identifier: PostgreSQL */
/*
 * pamauth.h - PAM authentication of a client's cleartext password (auth_type
 * = pam, hba "pam" lines, as PgBouncer). Owns the PAM conversation only; it
 * knows nothing of clients or the loop: callers run it on a worker thread.
 */
#ifndef SLUICE_PAMAUTH_H
#define SLUICE_PAMAUTH_H

#include <stdbool.h>

/* The PAM service pgsluice authenticates as: PgBouncer's, so /etc/pam.d/pgbouncer serves both. */
#define PAMAUTH_SERVICE "pgbouncer"

struct pamauth_result {
	bool ok;                /* pam_authenticate and pam_acct_mgmt both succeeded */
	char message[512];      /* why not, for the log ("pam_authenticate() failed: ...") */
};

/* True when pgsluice was built with libpam (configure --with-pam). */
bool pamauth_available(void);

/*
 * Authenticate user with password through PAM service PAMAUTH_SERVICE, with
 * PAM_RHOST = rhost (the client's address, "" for none), then check the
 * account (pam_acct_mgmt). confdir: the directory of the service file
 * (pam_start_confdir, Linux-PAM 1.4; auth_pam_confdir); "" = the system's
 * /etc/pam.d. Blocks for as long as the PAM modules take: call it from a
 * worker thread (workers.h), never on the loop. All pointers are borrowed.
 * Fills *res; res->ok false with res->message set on any failure, including
 * a build without PAM. Source: Linux-PAM Application Developers' Guide.
 */
void pamauth_check(const char *confdir, const char *user, const char *password, const char *rhost,
                   struct pamauth_result *res);

#endif
