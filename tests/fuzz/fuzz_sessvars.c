/* SPDX-License-Identifier: PostgreSQL */
/*
 * fuzz_sessvars.c - libFuzzer target for sessvars.c, which reads the SET,
 * RESET and set_config() statements of every client under transaction
 * pooling: any text is classified the same way twice without reading past
 * len (not NUL-terminated); a recognised one applied to a record keeps the
 * record within its bounds, and the SQL that brings a server to the record
 * is empty against itself.
 */
#include "fuzz.h"

#include <string.h>

#include "sessvars.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sessvar_op op, again;
	struct sessvars rec, startup;
	int count = -1;

	memset(&op, 0, sizeof op);
	memset(&again, 0, sizeof again);
	memset(&rec, 0, sizeof rec);
	memset(&startup, 0, sizeof startup);
	enum sessvar_kind k = sessvars_parse((const char *) data, size, &op);
	CHECK(k == sessvars_parse((const char *) data, size, &again));
	CHECK(k == op.kind);
	if (k == SESSVAR_SET || k == SESSVAR_SET_STRING || k == SESSVAR_RESET) {
		CHECK(op.name != NULL && op.name[0] != '\0');
		CHECK(strcmp(op.name, again.name) == 0);
	}
	if (k == SESSVAR_SET || k == SESSVAR_SET_STRING) {
		CHECK(op.value != NULL && strcmp(op.value, again.value) == 0);
		(void) sessvars_put(&startup, "search_path", "public", false);
		if (sessvars_fits(&rec, &op))
			CHECK(sessvars_apply(&rec, &startup, &op) == 0);
		CHECK(rec.n <= SESSVARS_MAX_COUNT && rec.bytes <= SESSVARS_MAX_BYTES);
		char *sql = sessvars_diff_sql(&rec, &rec, false, &count);
		CHECK(sql != NULL && sql[0] == '\0' && count == 0);
		free(sql);
		sql = sessvars_diff_sql(&rec, &startup, true, &count);
		CHECK(sql != NULL && count >= 1);
		free(sql);
	}
	sessvar_op_free(&op);
	sessvar_op_free(&again);
	sessvars_clear(&rec);
	sessvars_clear(&startup);
	return 0;
}
