/* SPDX-License-Identifier: PostgreSQL */
/*
 * fuzz_startup.c - libFuzzer target for the first packet a client sends:
 * the length and code of an untyped packet (StartupMessage, SSLRequest,
 * GSSENCRequest, CancelRequest, checked against PROTO_MAX_STARTUP_LEN as
 * client.c does), the StartupMessage's name/value pairs read with
 * proto_startup_param, the "options" parameter through
 * ai_session_apply_options (the -c / --name parser) and tracked parameters
 * through varcache_set: the pure parts client.c's startup_packet and
 * read_startup_params call; the socket and client state around them are
 * not linked here.
 */
#include "fuzz.h"

#include "ai/session.h"
#include "proto.h"
#include "varcache.h"
#include "sessvars.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	fuzz_quiet_log();
	varcache_set_tracked("search_path");
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct msgreader r;
	struct ai_session s;
	struct varcache vars;
	struct sessvars rec;
	char err[256];

	if (size < 8)
		return 0;
	mr_init(&r, data, size);
	uint32_t len = (uint32_t) mr_int32(&r), code = (uint32_t) mr_int32(&r);

	if (len < 8 || len > PROTO_MAX_STARTUP_LEN || len > size)
		return 0;                 /* "invalid length of startup packet" */
	if (code == PROTO_CANCEL_REQUEST && len == 16) {
		mr_int32(&r);
		mr_int32(&r);
		CHECK(!r.bad);
		return 0;
	}
	if ((code >> 16) != 3)
		return 0;                 /* SSLRequest, GSSENCRequest, other versions */

	/* the body, in an exactly sized copy */
	uint8_t *body = malloc(len > 8 ? len - 8 : 1);

	CHECK(body != NULL);
	memcpy(body, data + 8, len - 8);
	mr_init(&r, body, len - 8);
	memset(&s, 0, sizeof s);
	memset(&vars, 0, sizeof vars);
	memset(&rec, 0, sizeof rec);
	const char *name, *value;

	while (proto_startup_param(&r, &name, &value)) {
		CHECK(name[0] != '\0');
		if (varcache_index(name) >= 0) {
			CHECK(varcache_set(&vars, name, value));
		} else if (strcmp(name, "options") == 0) {
			err[0] = '\0';
			if (!ai_session_apply_options(&s, &vars, &rec, value, "extra_float_digits,geqo", err, sizeof err))
				CHECK(err[0] != '\0' && strnlen(err, sizeof err) < sizeof err);
			CHECK(strnlen(s.user, sizeof s.user) < sizeof s.user);
			CHECK(strnlen(s.model, sizeof s.model) < sizeof s.model);
		}
	}
	CHECK(r.pos <= r.len);
	CHECK(rec.n <= SESSVARS_MAX_COUNT && rec.bytes <= SESSVARS_MAX_BYTES);
	sessvars_clear(&rec);
	varcache_clear(&vars);
	free(body);
	return 0;
}
