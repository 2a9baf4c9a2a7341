/* SPDX-License-Identifier: PostgreSQL */
/*
 * refuse.h - how pgsluice fails a client's statement with its own error so
 * that the client and its server stay in step: answered locally when no
 * server is involved, or raised by the server itself inside a transaction.
 */
#ifndef SLUICE_REFUSE_H
#define SLUICE_REFUSE_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Write into buf (size bytes) a DO block that makes PostgreSQL raise the
 * error: ERRCODE sqlstate, MESSAGE, DETAIL and HINT (NULL to omit), as
 * E'' literals with quotes and backslashes escaped, so the text is safe
 * whatever standard_conforming_strings is (plpgsql-errors-and-messages.html).
 * A transaction block the statement was in is then failed by PostgreSQL
 * itself, exactly as if the statement had raised it. Returns false when buf
 * is too small.
 */
bool refuse_build_raise_sql(char *buf, size_t size, const char *sqlstate, const char *message,
                            const char *detail, const char *hint);

#endif
