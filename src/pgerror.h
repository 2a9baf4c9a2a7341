/* SPDX-License-Identifier: PostgreSQL */
/*
 * pgerror.h - one PostgreSQL-style error as pgsluice stores or returns it:
 * the fields of an ErrorResponse (protocol-error-fields.html), worded by the
 * Error Message Style Guide (error-style-guide.html). The one type for an
 * error kept or handed back (a refused statement, a server's error, a usage
 * record PostgreSQL refused); functions that only send an error take its
 * parts as arguments (client_fatal, msg_add_error).
 */
#ifndef SLUICE_PGERROR_H
#define SLUICE_PGERROR_H

/*
 * Fields are NUL-terminated, cut to their size in bytes; "" when absent.
 * severity is the received one ("ERROR", "FATAL", ...); "" for an error
 * pgsluice makes, whose sender chooses it (ERROR for a refused statement).
 */
struct pg_error {
	char severity[16];
	char sqlstate[6];      /* five characters (errcodes-appendix.html) */
	char message[512];     /* primary message */
	char detail[256];
	char hint[160];
};

#endif
