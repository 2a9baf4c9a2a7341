/* SPDX-License-Identifier: PostgreSQL */
/*
 * fuzz_scram_client.c - libFuzzer target for scram.c's client side, which
 * reads a server's AuthenticationSASLContinue and AuthenticationSASLFinal
 * (a hostile server, or a man in the middle on a "prefer" TLS leg): the
 * input is server-first-message, a NUL byte, server-final-message. Runs with
 * pass-through keys (SCRAM_DEFAULT_ITERATIONS, a fixed salt) so no input
 * can ask for a long PBKDF2; the parsing is the same as with a password.
 */
#include "fuzz.h"

#include "scram.h"

static struct scram_secret secret;
static uint8_t client_key[SCRAM_KEY_LEN];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const uint8_t salt[16] = "W22ZaJ0SNY7soEsU";

	fuzz_quiet_log();
	CHECK(scram_secret_from_password("pencil", salt, sizeof salt, SCRAM_DEFAULT_ITERATIONS, &secret));
	memset(client_key, 0x5a, sizeof client_key);
	return 0;
}

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
	struct scram_client c;
	const char *err = NULL;
	char *first, *msg, *reply;

	memset(&c, 0, sizeof c);
	scram_client_init_keys(&c, &secret, client_key);
	scram_client_set_nonce(&c, "rOprNGfwEbeRWgbNEkqO");
	if (size > 0 && (data[0] & 1)) {  /* SCRAM-SHA-256-PLUS: the gs2 header carries the binding */
		uint8_t cb[32];

		memset(cb, 0xc3, sizeof cb);
		CHECK(scram_client_set_channel_binding(&c, cb, sizeof cb));
	}
	first = scram_client_first(&c);
	CHECK(first != NULL);
	free(first);

	msg = exact_copy(data, first_len);
	reply = scram_client_handle_server_first(&c, msg, first_len, &err);
	CHECK((reply != NULL) != (err != NULL));
	if (reply && sep) {
		size_t final_len = size - first_len - 1;
		char *final = exact_copy(sep + 1, final_len);

		err = NULL;
		if (!scram_client_verify_server_final(&c, final, final_len, &err))
			CHECK(err != NULL);
		free(final);
	}
	free(reply);
	free(msg);
	scram_client_free(&c);
	return 0;
}
