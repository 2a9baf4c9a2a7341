/* SPDX-License-Identifier: PostgreSQL */
/* refuse.c - see refuse.h. */
#include "refuse.h"

#include <string.h>

static bool put(char *buf, size_t size, size_t *pos, const char *s)
{
	size_t n = strlen(s);
	if (*pos + n + 1 > size)
		return false;
	memcpy(buf + *pos, s, n + 1);
	*pos += n;
	return true;
}

/* E'...' with ' and \ doubled, and '$' written as \x24 so that no text
 * (a subject name comes from the client) can end the dollar quote. */
static bool put_literal(char *buf, size_t size, size_t *pos, const char *s)
{
	if (!put(buf, size, pos, "E'"))
		return false;
	for (; *s; s++) {
		char c[3] = { *s, 0, 0 };
		if (*s == '\'' || *s == '\\')
			c[1] = *s;
		if (!put(buf, size, pos, *s == '$' ? "\\x24" : c))
			return false;
	}
	return put(buf, size, pos, "'");
}

bool refuse_build_raise_sql(char *buf, size_t size, const char *sqlstate, const char *message,
                            const char *detail, const char *hint)
{
	size_t pos = 0;
	bool ok = put(buf, size, &pos, "DO $pgsluice$BEGIN RAISE EXCEPTION USING ERRCODE = ") &&
	          put_literal(buf, size, &pos, sqlstate) &&
	          put(buf, size, &pos, ", MESSAGE = ") && put_literal(buf, size, &pos, message);
	if (ok && detail)
		ok = put(buf, size, &pos, ", DETAIL = ") && put_literal(buf, size, &pos, detail);
	if (ok && hint)
		ok = put(buf, size, &pos, ", HINT = ") && put_literal(buf, size, &pos, hint);
	return ok && put(buf, size, &pos, "; END$pgsluice$");
}
