/* SPDX-License-Identifier: PostgreSQL */
/*
 * fuzz_scram_server.c - libFuzzer target for scram.c's server side, which
 * reads a client's SASLInitialResponse and SASLResponse: the input is
 * client-first-message, a NUL byte, client-final-message. The exchange must
 * end in a server-first/server-final message or an error with *err set,
 * never both, never neither. The server nonce is fixed so that the fuzzer
 * can reach the proof check; the secret is "pencil"'s (RFC 7677).
 */
#include "fuzz.h"

#include "scram.h"

static struct scram_secret secret;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const uint8_t salt[16] = "W22ZaJ0SNY7soEsU";

	fuzz_quiet_log();
	CHECK(scram_secret_from_password("pencil", salt, sizeof salt, SCRAM_DEFAULT_ITERATIONS, &secret));
	return 0;
}

/* msg[0..len) in an exactly sized heap block, so that ASan sees a read past len. */
static char *exact_copy(const uint8_t *msg, size_t len)
{
	char *p = malloc(len ? len : 1);

	CHECK(p != NULL);
	memcpy(p, msg, len);
	return p;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *sep = memchr(data, '\0', size);
	size_t first_len = sep ? (size_t) (sep - data) : size;
	struct scram_server s;
	const char *err = NULL;
	char *first = exact_copy(data, first_len), *reply;

	scram_server_init(&s, &secret);
	scram_server_set_nonce(&s, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
	reply = scram_server_handle_first(&s, first, first_len, &err);
	CHECK((reply != NULL) != (err != NULL));
	if (reply && sep) {
		size_t final_len = size - first_len - 1;
		char *final = exact_copy(sep + 1, final_len), *last;

		CHECK(s.step == SCRAM_SERVER_SENT_FIRST);
		free(reply);
		err = NULL;
		last = scram_server_handle_final(&s, final, final_len, &err);
		CHECK((last != NULL) != (err != NULL));
		if (last) {
			CHECK(s.have_client_key && strncmp(last, "v=", 2) == 0);
			free(last);
		}
		free(final);
	} else {
		free(reply);
	}
	scram_server_free(&s);
	free(first);
	return 0;
}
