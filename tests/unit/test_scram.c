/* SPDX-License-Identifier: PostgreSQL */
/*
 * test_scram.c - SCRAM-SHA-256 both ways: RFC 7677's exchange byte for
 * byte, secrets as PostgreSQL stores them, our client against our server,
 * pass-through keys, and malformed input that must fail without crashing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "scram.h"

/* RFC 7677 section 3 */
#define RFC_USER "user"
#define RFC_PASSWORD "pencil"
#define RFC_CLIENT_NONCE "rOprNGfwEbeRWgbNEkqO"
#define RFC_SERVER_NONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define RFC_SALT_B64 "W22ZaJ0SNY7soEsUEjb6gQ=="
#define RFC_CLIENT_FIRST "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
#define RFC_SERVER_FIRST "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0," \
                         "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
#define RFC_CLIENT_FINAL "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0," \
                         "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define RFC_SERVER_FINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

/* The RFC's keys in PostgreSQL's secret format (StoredKey, ServerKey computed with Python's hashlib). */
#define RFC_SECRET "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$" \
                   "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:" \
                   "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="

/* ClientKey of the RFC exchange (HMAC(SaltedPassword, "Client Key")). */
static const uint8_t rfc_client_key[SCRAM_KEY_LEN] = {
	0xa6, 0x0f, 0xc9, 0x23, 0xd6, 0x7e, 0x86, 0x44, 0xa9, 0x2d, 0x16, 0xb9, 0x6e, 0xda, 0x5e, 0xf4,
	0x65, 0x6b, 0x0c, 0x72, 0x5c, 0x48, 0x43, 0x74, 0xbe, 0x25, 0x53, 0x55, 0x76, 0x99, 0x6e, 0x8b,
};

/* pg_authid.rolpassword written by PostgreSQL 15 for CREATE ROLE "user" PASSWORD 'pencil'. */
#define PG15_SECRET "SCRAM-SHA-256$4096:liaTXxEtwsC23qnGKAm/Aw==$" \
                    "0H510I8AOPah0Nhpbjv1KvJolbMhRnREs99ipX1SzUQ=:" \
                    "CkqA/1kV9atBbBtSIY14JRVCg2HsT8NQymvLyX4KxiQ="

static const uint8_t rfc_salt[16] = {
	0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e, 0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36, 0xfa, 0x81,
};

static struct scram_secret secret_for(const char *password, const uint8_t *salt, size_t salt_len)
{
	struct scram_secret s;

	assert_true(scram_secret_from_password(password, salt, salt_len, 4096, &s));
	return s;
}

/* ClientKey computed here with OpenSSL directly, to check what the server recovers. */
static void real_client_key(const char *password, const struct scram_secret *secret,
                            uint8_t out[SCRAM_KEY_LEN])
{
	uint8_t salted[SCRAM_KEY_LEN];
	unsigned int len = 0;

	assert_int_equal(PKCS5_PBKDF2_HMAC(password, (int) strlen(password), secret->salt,
	                                   (int) secret->salt_len, secret->iterations, EVP_sha256(),
	                                   SCRAM_KEY_LEN, salted), 1);
	assert_non_null(HMAC(EVP_sha256(), salted, SCRAM_KEY_LEN, (const uint8_t *) "Client Key", 10,
	                     out, &len));
}

/* Runs client-first and server-first; returns the server-first message. */
static char *start_exchange(struct scram_client *c, struct scram_server *s)
{
	const char *err = NULL;
	char *first = scram_client_first(c);
	char *server_first;

	assert_non_null(first);
	server_first = scram_server_handle_first(s, first, strlen(first), &err);
	assert_non_null(server_first);
	free(first);
	return server_first;
}

/* Full exchange; returns the server's error or NULL on success (client verified the server too). */
static const char *run_exchange(struct scram_client *c, struct scram_server *s)
{
	const char *err = NULL;
	char *server_first = start_exchange(c, s), *client_final, *server_final;

	client_final = scram_client_handle_server_first(c, server_first, strlen(server_first), &err);
	free(server_first);
	if (!client_final)
		return err;
	server_final = scram_server_handle_final(s, client_final, strlen(client_final), &err);
	free(client_final);
	if (!server_final)
		return err;
	assert_true(scram_client_verify_server_final(c, server_final, strlen(server_final), &err));
	assert_int_equal(c->step, SCRAM_CLIENT_DONE);
	free(server_final);
	return NULL;
}

/* ---- RFC 7677 ---- */

static void test_client_reproduces_rfc7677_exchange(void **state)
{
	struct scram_client c;
	const char *err = NULL;
	char *msg;

	(void) state;
	assert_true(scram_client_init_password(&c, RFC_PASSWORD));
	assert_true(scram_client_set_user(&c, RFC_USER));
	scram_client_set_nonce(&c, RFC_CLIENT_NONCE);
	msg = scram_client_first(&c);
	assert_string_equal(msg, RFC_CLIENT_FIRST);
	free(msg);
	msg = scram_client_handle_server_first(&c, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), &err);
	assert_non_null(msg);
	assert_string_equal(msg, RFC_CLIENT_FINAL);
	free(msg);
	assert_true(scram_client_verify_server_final(&c, RFC_SERVER_FINAL, strlen(RFC_SERVER_FINAL), &err));
	assert_int_equal(c.step, SCRAM_CLIENT_DONE);
	scram_client_free(&c);
}

static void test_server_accepts_rfc7677_client(void **state)
{
	struct scram_secret secret = secret_for(RFC_PASSWORD, rfc_salt, sizeof(rfc_salt));
	struct scram_server s;
	const char *err = NULL;
	char *msg;

	(void) state;
	scram_server_init(&s, &secret);
	scram_server_set_nonce(&s, RFC_SERVER_NONCE);
	msg = scram_server_handle_first(&s, RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST), &err);
	assert_non_null(msg);
	assert_string_equal(msg, RFC_SERVER_FIRST);
	free(msg);
	msg = scram_server_handle_final(&s, RFC_CLIENT_FINAL, strlen(RFC_CLIENT_FINAL), &err);
	assert_non_null(msg);
	assert_string_equal(msg, RFC_SERVER_FINAL);
	free(msg);
	assert_int_equal(s.step, SCRAM_SERVER_DONE);
	assert_true(s.have_client_key);
	assert_memory_equal(s.client_key, rfc_client_key, SCRAM_KEY_LEN);
	scram_server_free(&s);
}

static void test_secret_from_rfc_password_matches_postgresql_text(void **state)
{
	struct scram_secret derived = secret_for(RFC_PASSWORD, rfc_salt, sizeof(rfc_salt));
	struct scram_secret parsed;

	(void) state;
	assert_true(scram_parse_secret(RFC_SECRET, &parsed));
	assert_int_equal(parsed.iterations, 4096);
	assert_int_equal(parsed.salt_len, sizeof(rfc_salt));
	assert_memory_equal(parsed.salt, rfc_salt, sizeof(rfc_salt));
	assert_memory_equal(parsed.stored_key, derived.stored_key, SCRAM_KEY_LEN);
	assert_memory_equal(parsed.server_key, derived.server_key, SCRAM_KEY_LEN);
}

static void test_server_with_parsed_secret_accepts_rfc_client_final(void **state)
{
	struct scram_secret secret;
	struct scram_server s;
	const char *err = NULL;
	char *msg;

	(void) state;
	assert_true(scram_parse_secret(RFC_SECRET, &secret));
	scram_server_init(&s, &secret);
	scram_server_set_nonce(&s, RFC_SERVER_NONCE);
	msg = scram_server_handle_first(&s, RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST), &err);
	free(msg);
	msg = scram_server_handle_final(&s, RFC_CLIENT_FINAL, strlen(RFC_CLIENT_FINAL), &err);
	assert_non_null(msg);
	assert_string_equal(msg, RFC_SERVER_FINAL);
	free(msg);
	scram_server_free(&s);
}

/* ---- secrets ---- */

static void test_secret_written_by_postgresql_is_reproduced_from_password(void **state)
{
	struct scram_secret parsed, derived;

	(void) state;
	assert_true(scram_parse_secret(PG15_SECRET, &parsed));
	assert_int_equal(parsed.iterations, 4096);
	assert_int_equal(parsed.salt_len, 16);
	assert_true(scram_secret_from_password("pencil", parsed.salt, parsed.salt_len,
	                                       parsed.iterations, &derived));
	assert_memory_equal(derived.stored_key, parsed.stored_key, SCRAM_KEY_LEN);
	assert_memory_equal(derived.server_key, parsed.server_key, SCRAM_KEY_LEN);
}

static void test_malformed_secrets_are_rejected(void **state)
{
	static const char *const bad[] = {
		"",
		"pencil",
		"md53858f62230ac3c915f300c664312c63f",
		"SCRAM-SHA-256$",
		"SCRAM-SHA-1$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		"SCRAM-SHA-256$0:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		"SCRAM-SHA-256$-1:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		"SCRAM-SHA-256$ 4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		"SCRAM-SHA-256$99999999999:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ=$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		"SCRAM-SHA-256$4096:$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		"SCRAM-SHA-256$4096:W22Z!J0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=",
		"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7Bke:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
		"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=x",
		"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=:",
		"SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU= ",
	};
	struct scram_secret s;
	size_t i;

	(void) state;
	assert_false(scram_parse_secret(NULL, &s));
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (scram_parse_secret(bad[i], &s))
			fail_msg("accepted malformed secret %s", bad[i]);
	}
}

static void test_secret_from_password_rejects_unusable_parameters(void **state)
{
	uint8_t big[SCRAM_MAX_SALT_LEN + 1] = { 0 };
	struct scram_secret s;

	(void) state;
	assert_false(scram_secret_from_password("pencil", rfc_salt, sizeof(rfc_salt), 0, &s));
	assert_false(scram_secret_from_password("pencil", rfc_salt, sizeof(rfc_salt), -4096, &s));
	assert_false(scram_secret_from_password("pencil", rfc_salt, 0, 4096, &s));
	assert_false(scram_secret_from_password("pencil", big, sizeof(big), 4096, &s));
	assert_false(scram_secret_from_password(NULL, rfc_salt, sizeof(rfc_salt), 4096, &s));
	assert_true(scram_secret_from_password("", rfc_salt, sizeof(rfc_salt), 1, &s));
}

/* ---- our client against our server ---- */

static void test_correct_password_succeeds_and_server_recovers_client_key(void **state)
{
	static const uint8_t salt[] = "0123456789abcdef";
	struct scram_secret secret = secret_for("correct horse", salt, 16);
	uint8_t expected[SCRAM_KEY_LEN];
	struct scram_client c;
	struct scram_server s;

	(void) state;
	scram_server_init(&s, &secret);
	assert_true(scram_client_init_password(&c, "correct horse"));
	assert_null(run_exchange(&c, &s));
	assert_int_equal(s.step, SCRAM_SERVER_DONE);
	real_client_key("correct horse", &secret, expected);
	assert_true(s.have_client_key);
	assert_memory_equal(s.client_key, expected, SCRAM_KEY_LEN);
	scram_client_free(&c);
	scram_server_free(&s);
}

static void test_wrong_password_fails_with_password_authentication_failed(void **state)
{
	struct scram_secret secret = secret_for("pencil", rfc_salt, sizeof(rfc_salt));
	struct scram_client c;
	struct scram_server s;
	const char *err;

	(void) state;
	scram_server_init(&s, &secret);
	assert_true(scram_client_init_password(&c, "pen"));
	err = run_exchange(&c, &s);
	assert_non_null(err);
	assert_string_equal(err, "password authentication failed");
	assert_int_equal(s.step, SCRAM_SERVER_FAILED);
	assert_false(s.have_client_key);
	scram_client_free(&c);
	scram_server_free(&s);
}

static void test_empty_password_still_runs_the_exchange(void **state)
{
	struct scram_secret secret = secret_for("", rfc_salt, sizeof(rfc_salt));
	struct scram_client c;
	struct scram_server s;

	(void) state;
	scram_server_init(&s, &secret);
	assert_true(scram_client_init_password(&c, ""));
	assert_null(run_exchange(&c, &s));
	scram_client_free(&c);
	scram_server_free(&s);
}

static void test_client_first_is_postgresql_shaped(void **state)
{
	struct scram_client c;
	char *msg;
	size_t i;

	(void) state;
	assert_true(scram_client_init_password(&c, "pencil"));
	msg = scram_client_first(&c);
	assert_non_null(msg);
	/* empty user name, 18 random bytes as 24 base64 characters */
	assert_int_equal(strncmp(msg, "n,,n=,r=", 8), 0);
	assert_int_equal(strlen(msg), 8 + 24);
	for (i = 8; msg[i]; i++)
		assert_non_null(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", msg[i]));
	assert_string_equal(msg + 8, c.client_nonce);
	free(msg);
	assert_null(scram_client_first(&c));
	scram_client_free(&c);
}

static void test_server_nonce_extends_client_nonce_by_24_characters(void **state)
{
	struct scram_secret secret = secret_for("pencil", rfc_salt, sizeof(rfc_salt));
	struct scram_server s;
	const char *err = NULL;
	char *msg;

	(void) state;
	scram_server_init(&s, &secret);
	msg = scram_server_handle_first(&s, "n,,n=,r=abc", 11, &err);
	assert_non_null(msg);
	assert_int_equal(strncmp(msg, "r=abc", 5), 0);
	assert_int_equal(strcspn(msg, ","), 2 + 3 + 24);
	assert_string_equal(msg + 2 + 3 + 24, ",s=" RFC_SALT_B64 ",i=4096");
	free(msg);
	scram_server_free(&s);
}

static void test_user_name_is_escaped_in_client_first(void **state)
{
	struct scram_client c;
	char *msg;

	(void) state;
	assert_true(scram_client_init_password(&c, "pencil"));
	assert_true(scram_client_set_user(&c, "a,b=c"));
	scram_client_set_nonce(&c, "xyz");
	msg = scram_client_first(&c);
	assert_string_equal(msg, "n,,n=a=2Cb=3Dc,r=xyz");
	free(msg);
	scram_client_free(&c);
}

static void test_tampered_nonce_in_client_final_is_rejected(void **state)
{
	struct scram_secret secret = secret_for("pencil", rfc_salt, sizeof(rfc_salt));
	struct scram_client c;
	struct scram_server s;
	const char *err = NULL;
	char *server_first, *client_final, *r;

	(void) state;
	scram_server_init(&s, &secret);
	assert_true(scram_client_init_password(&c, "pencil"));
	server_first = start_exchange(&c, &s);
	client_final = scram_client_handle_server_first(&c, server_first, strlen(server_first), &err);
	assert_non_null(client_final);
	r = strstr(client_final, ",r=") + 3 + 30;   /* inside the server's part */
	*r = *r == 'A' ? 'B' : 'A';
	assert_null(scram_server_handle_final(&s, client_final, strlen(client_final), &err));
	assert_string_equal(err, "SCRAM nonce mismatch");
	assert_int_equal(s.step, SCRAM_SERVER_FAILED);
	free(server_first);
	free(client_final);
	scram_client_free(&c);
	scram_server_free(&s);
}

static void test_server_nonce_not_extending_ours_is_rejected(void **state)
{
	static const char *const bad[] = {
		"r=XrOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
		"r=rOprNGfwEbeRWgbNEkq,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
		"r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
		"r=rOprNGfwEbeRWgbNEkqO\x01,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
	};
	size_t i;

	(void) state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct scram_client c;
		const char *err = NULL;
		char *msg;

		assert_true(scram_client_init_password(&c, "pencil"));
		scram_client_set_nonce(&c, RFC_CLIENT_NONCE);
		free(scram_client_first(&c));
		assert_null(scram_client_handle_server_first(&c, bad[i], strlen(bad[i]), &err));
		assert_string_equal(err, "invalid SCRAM response (nonce mismatch)");
		assert_int_equal(c.step, SCRAM_CLIENT_FAILED);
		msg = scram_client_handle_server_first(&c, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), &err);
		assert_null(msg);
		scram_client_free(&c);
	}
}

/* The client accepts only the server signature made with the same AuthMessage. */
static void test_forged_server_final_is_rejected(void **state)
{
	static const char *const bad[] = {
		"v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
		"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4",
		"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=,x=1",
		"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=,",
		"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4A",
		"v=",
		"v",
		"e=invalid-proof",
		"x=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
		"",
	};
	size_t i;

	(void) state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct scram_client c;
		const char *err = NULL;
		char *msg;

		assert_true(scram_client_init_password(&c, RFC_PASSWORD));
		assert_true(scram_client_set_user(&c, RFC_USER));
		scram_client_set_nonce(&c, RFC_CLIENT_NONCE);
		free(scram_client_first(&c));
		msg = scram_client_handle_server_first(&c, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), &err);
		assert_non_null(msg);
		free(msg);
		if (scram_client_verify_server_final(&c, bad[i], strlen(bad[i]), &err))
			fail_msg("accepted server-final \"%s\"", bad[i]);
		assert_non_null(err);
		assert_int_equal(c.step, SCRAM_CLIENT_FAILED);
		scram_client_free(&c);
	}
}

/* ---- pass-through ---- */

/* The ClientKey a scram_server recovers when the client knows the password. */
static void recover_client_key(const struct scram_secret *secret, const char *password,
                               uint8_t out[SCRAM_KEY_LEN])
{
	struct scram_client c;
	struct scram_server s;

	scram_server_init(&s, secret);
	assert_true(scram_client_init_password(&c, password));
	assert_null(run_exchange(&c, &s));
	memcpy(out, s.client_key, SCRAM_KEY_LEN);
	scram_client_free(&c);
	scram_server_free(&s);
}

static void test_recovered_client_key_logs_into_server_with_same_secret(void **state)
{
	struct scram_secret secret;
	uint8_t client_key[SCRAM_KEY_LEN];
	struct scram_client c;
	struct scram_server s;

	(void) state;
	assert_true(scram_parse_secret(PG15_SECRET, &secret));
	recover_client_key(&secret, "pencil", client_key);
	scram_client_init_keys(&c, &secret, client_key);
	assert_null(c.password);
	scram_server_init(&s, &secret);
	assert_null(run_exchange(&c, &s));
	assert_memory_equal(s.client_key, client_key, SCRAM_KEY_LEN);
	scram_client_free(&c);
	scram_server_free(&s);
}

static void test_recovered_client_key_with_other_salt_fails_with_secret_mismatch(void **state)
{
	static const uint8_t other_salt[] = "another salt....";
	struct scram_secret ours, servers;
	uint8_t client_key[SCRAM_KEY_LEN];
	struct scram_client c;
	struct scram_server s;
	const char *err;

	(void) state;
	assert_true(scram_parse_secret(PG15_SECRET, &ours));
	servers = secret_for("pencil", other_salt, 16);
	recover_client_key(&ours, "pencil", client_key);
	scram_client_init_keys(&c, &ours, client_key);
	scram_server_init(&s, &servers);
	err = run_exchange(&c, &s);
	assert_non_null(err);
	assert_string_equal(err, "SCRAM secret of pgsluice does not match the server's");
	assert_int_equal(c.step, SCRAM_CLIENT_FAILED);
	scram_client_free(&c);
	scram_server_free(&s);
}

static void test_recovered_client_key_with_other_iterations_fails_with_secret_mismatch(void **state)
{
	struct scram_secret ours = secret_for("pencil", rfc_salt, sizeof(rfc_salt)), servers;
	uint8_t client_key[SCRAM_KEY_LEN];
	struct scram_client c;
	struct scram_server s;
	const char *err;

	(void) state;
	assert_true(scram_secret_from_password("pencil", rfc_salt, sizeof(rfc_salt), 4097, &servers));
	recover_client_key(&ours, "pencil", client_key);
	scram_client_init_keys(&c, &ours, client_key);
	scram_server_init(&s, &servers);
	err = run_exchange(&c, &s);
	assert_string_equal(err, "SCRAM secret of pgsluice does not match the server's");
	scram_client_free(&c);
	scram_server_free(&s);
}

/* ---- channel-binding flag "y" ---- */

static char *b64(const uint8_t *data, size_t len)
{
	char *out = malloc(4 * ((len + 2) / 3) + 1);

	assert_non_null(out);
	EVP_EncodeBlock((unsigned char *) out, data, (int) len);
	return out;
}

/* A client-final with c=<cbind> and a correct proof for the RFC keys, computed here. */
static char *rfc_client_final_with(const char *cbind, const char *client_first_bare,
                                   const char *server_first)
{
	uint8_t stored[SCRAM_KEY_LEN], proof[SCRAM_KEY_LEN];
	char without_proof[256], auth[512], *proof_b64, *msg;
	const char *nonce = server_first + 2;
	unsigned int len;
	size_t i;

	snprintf(without_proof, sizeof(without_proof), "c=%s,r=%.*s", cbind,
	         (int) strcspn(nonce, ","), nonce);
	snprintf(auth, sizeof(auth), "%s,%s,%s", client_first_bare, server_first, without_proof);
	assert_int_equal(EVP_Digest(rfc_client_key, SCRAM_KEY_LEN, stored, &len, EVP_sha256(), NULL), 1);
	assert_non_null(HMAC(EVP_sha256(), stored, SCRAM_KEY_LEN, (uint8_t *) auth, strlen(auth), proof, &len));
	for (i = 0; i < SCRAM_KEY_LEN; i++)
		proof[i] ^= rfc_client_key[i];
	proof_b64 = b64(proof, SCRAM_KEY_LEN);
	msg = malloc(strlen(without_proof) + strlen(proof_b64) + 4);
	assert_non_null(msg);
	sprintf(msg, "%s,p=%s", without_proof, proof_b64);
	free(proof_b64);
	return msg;
}

/* Returns the server's error for gs2 flag + c= pair, NULL when accepted. */
static const char *try_cbind(const char *client_first, const char *cbind)
{
	struct scram_secret secret = secret_for(RFC_PASSWORD, rfc_salt, sizeof(rfc_salt));
	struct scram_server s;
	const char *err = NULL;
	char *server_first, *client_final, *server_final;

	scram_server_init(&s, &secret);
	server_first = scram_server_handle_first(&s, client_first, strlen(client_first), &err);
	assert_non_null(server_first);
	client_final = rfc_client_final_with(cbind, client_first + 3, server_first);
	server_final = scram_server_handle_final(&s, client_final, strlen(client_final), &err);
	if (server_final)
		err = NULL;
	free(server_first);
	free(client_final);
	free(server_final);
	scram_server_free(&s);
	return err;
}

static void test_channel_binding_attribute_must_repeat_gs2_flag(void **state)
{
	static const char cbind_err[] = "unexpected SCRAM channel-binding attribute in client-final-message";

	(void) state;
	assert_null(try_cbind("n,,n=,r=" RFC_CLIENT_NONCE, "biws"));
	assert_null(try_cbind("y,,n=,r=" RFC_CLIENT_NONCE, "eSws"));
	assert_string_equal(try_cbind("n,,n=,r=" RFC_CLIENT_NONCE, "eSws"), cbind_err);
	assert_string_equal(try_cbind("y,,n=,r=" RFC_CLIENT_NONCE, "biws"), cbind_err);
	assert_string_equal(try_cbind("n,,n=,r=" RFC_CLIENT_NONCE, "cD10bHMtc2VydmVyLWVuZC1wb2ludCws"), cbind_err);
}

static void test_client_first_extensions_after_nonce_are_ignored(void **state)
{
	(void) state;
	assert_null(try_cbind("n,,n=,r=" RFC_CLIENT_NONCE ",x=ext", "biws"));
	assert_null(try_cbind("n,,n=someone,r=" RFC_CLIENT_NONCE, "biws"));
}

/* ---- malformed input ---- */

static void test_malformed_client_first_fails(void **state)
{
	static const char *const bad[] = {
		"", "n", "n,", "n,,", "n,,n", "n,,n=", "n,,n=,", "n,,n=,r=", "n,,n=,r", "n,,r=abc",
		"x,,n=,r=abc", "N,,n=,r=abc", "p=tls-server-end-point,,n=,r=abc", "n,a=user,n=,r=abc",
		"n,,m=ext,n=,r=abc", "n,,n=,r=abc,", "n,,n=,r=ab c", "n,,n=,r=abc,garbage",
		"n,,n=,r=abc,,x=1", "n,n=,r=abc", ",,n=,r=abc", "n,,n=,s=abc", "\xff\xfe\xfd",
		"SCRAM-SHA-256", "n,,n=,r=\x7f",
	};
	size_t i;

	(void) state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct scram_secret secret = secret_for("pencil", rfc_salt, sizeof(rfc_salt));
		struct scram_server s;
		const char *err = NULL;
		char *msg;

		scram_server_init(&s, &secret);
		msg = scram_server_handle_first(&s, bad[i], strlen(bad[i]), &err);
		if (msg)
			fail_msg("accepted client-first \"%s\": %s", bad[i], msg);
		assert_non_null(err);
		assert_int_equal(s.step, SCRAM_SERVER_FAILED);
		scram_server_free(&s);
	}
}

static void test_client_first_with_embedded_nul_fails(void **state)
{
	struct scram_secret secret = secret_for("pencil", rfc_salt, sizeof(rfc_salt));
	struct scram_server s;
	const char *err = NULL;

	(void) state;
	scram_server_init(&s, &secret);
	assert_null(scram_server_handle_first(&s, "n,,n=,r=abc\0def", 15, &err));
	assert_string_equal(err, "malformed SCRAM message (length mismatch)");
	scram_server_free(&s);
	scram_server_init(&s, &secret);
	assert_null(scram_server_handle_first(&s, NULL, 0, &err));
	assert_string_equal(err, "malformed SCRAM message (empty message)");
	scram_server_free(&s);
}

static void test_channel_binding_and_authzid_are_refused_by_name(void **state)
{
	struct scram_secret secret = secret_for("pencil", rfc_salt, sizeof(rfc_salt));
	struct scram_server s;
	const char *err = NULL;

	(void) state;
	scram_server_init(&s, &secret);
	assert_null(scram_server_handle_first(&s, "p=tls-server-end-point,,n=,r=abc", 32, &err));
	assert_string_equal(err, "client requires SCRAM channel binding, but it is not supported");
	scram_server_free(&s);
	scram_server_init(&s, &secret);
	assert_null(scram_server_handle_first(&s, "n,a=bob,n=,r=abc", 16, &err));
	assert_string_equal(err, "client uses authorization identity, but it is not supported");
	scram_server_free(&s);
}

static void test_malformed_client_final_fails(void **state)
{
	static const char *const bad[] = {
		"", "c=biws", "c=biws,", "c=biws,r=" RFC_CLIENT_NONCE RFC_SERVER_NONCE,
		"c=biws,r=" RFC_CLIENT_NONCE RFC_SERVER_NONCE ",",
		"c=biws,r=" RFC_CLIENT_NONCE RFC_SERVER_NONCE ",p=",
		"c=biws,r=" RFC_CLIENT_NONCE RFC_SERVER_NONCE ",p=!!!!",
		"c=biws,r=" RFC_CLIENT_NONCE RFC_SERVER_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ",
		"c=biws,r=" RFC_CLIENT_NONCE RFC_SERVER_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndA==",
		"c=biws,r=" RFC_CLIENT_NONCE RFC_SERVER_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=,x=1",
		"c=biws,r=" RFC_CLIENT_NONCE RFC_SERVER_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=,",
		"c=biws,r=" RFC_CLIENT_NONCE RFC_SERVER_NONCE ",p=dHzcZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
		"c=biws,r=" RFC_CLIENT_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
		"c=biws,r=" RFC_CLIENT_NONCE RFC_SERVER_NONCE "x,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
		"r=" RFC_CLIENT_NONCE RFC_SERVER_NONCE ",c=biws,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
		"c=,r=" RFC_CLIENT_NONCE RFC_SERVER_NONCE ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
		"c=biws,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
		"garbage", "\x80\x81,\x82=",
	};
	struct scram_secret secret = secret_for(RFC_PASSWORD, rfc_salt, sizeof(rfc_salt));
	size_t i;

	(void) state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct scram_server s;
		const char *err = NULL;
		char *msg;

		scram_server_init(&s, &secret);
		scram_server_set_nonce(&s, RFC_SERVER_NONCE);
		free(scram_server_handle_first(&s, RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST), &err));
		msg = scram_server_handle_final(&s, bad[i], strlen(bad[i]), &err);
		if (msg)
			fail_msg("accepted client-final \"%s\"", bad[i]);
		assert_non_null(err);
		assert_int_equal(s.step, SCRAM_SERVER_FAILED);
		assert_false(s.have_client_key);
		scram_server_free(&s);
	}
}

static void test_malformed_server_first_fails(void **state)
{
	static const char *const bad[] = {
		"", "r=", "r", "s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
		"r=rOprNGfwEbeRWgbNEkqOsrv",
		"r=rOprNGfwEbeRWgbNEkqOsrv,",
		"r=rOprNGfwEbeRWgbNEkqOsrv,s=W22ZaJ0SNY7soEsUEjb6gQ==",
		"r=rOprNGfwEbeRWgbNEkqOsrv,s=W22ZaJ0SNY7soEsUEjb6gQ==,",
		"r=rOprNGfwEbeRWgbNEkqOsrv,s=,i=4096",
		"r=rOprNGfwEbeRWgbNEkqOsrv,s=!!!!,i=4096",
		"r=rOprNGfwEbeRWgbNEkqOsrv,s=W22ZaJ0SNY7soEsUEjb6gQ=,i=4096",
		"r=rOprNGfwEbeRWgbNEkqOsrv,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=",
		"r=rOprNGfwEbeRWgbNEkqOsrv,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0",
		"r=rOprNGfwEbeRWgbNEkqOsrv,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=-1",
		"r=rOprNGfwEbeRWgbNEkqOsrv,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=+4096",
		"r=rOprNGfwEbeRWgbNEkqOsrv,s=W22ZaJ0SNY7soEsUEjb6gQ==,i= 4096",
		"r=rOprNGfwEbeRWgbNEkqOsrv,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096x",
		"r=rOprNGfwEbeRWgbNEkqOsrv,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=2147483648",
		"r=rOprNGfwEbeRWgbNEkqOsrv,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=99999999999999999999",
		"r=rOprNGfwEbeRWgbNEkqOsrv,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,x=1",
		"r=rOprNGfwEbeRWgbNEkqOsrv,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,",
		"r=rOprNGfwEbeRWgbNEkqOsrv,i=4096,s=W22ZaJ0SNY7soEsUEjb6gQ==",
		"m=ext,r=rOprNGfwEbeRWgbNEkqOsrv,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
		"e=other-error", "garbage", "\xff",
	};
	size_t i;

	(void) state;
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct scram_client c;
		const char *err = NULL;
		char *msg;

		assert_true(scram_client_init_password(&c, "pencil"));
		scram_client_set_nonce(&c, RFC_CLIENT_NONCE);
		free(scram_client_first(&c));
		msg = scram_client_handle_server_first(&c, bad[i], strlen(bad[i]), &err);
		if (msg)
			fail_msg("accepted server-first \"%s\"", bad[i]);
		assert_non_null(err);
		assert_int_equal(c.step, SCRAM_CLIENT_FAILED);
		scram_client_free(&c);
	}
}

static void test_iteration_count_below_one_is_rejected_by_name(void **state)
{
	static const char msg[] = "r=rOprNGfwEbeRWgbNEkqOsrv,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0";
	struct scram_client c;
	const char *err = NULL;

	(void) state;
	assert_true(scram_client_init_password(&c, "pencil"));
	scram_client_set_nonce(&c, RFC_CLIENT_NONCE);
	free(scram_client_first(&c));
	assert_null(scram_client_handle_server_first(&c, msg, strlen(msg), &err));
	assert_string_equal(err, "malformed SCRAM message (invalid iteration count)");
	scram_client_free(&c);
}

static void test_steps_out_of_order_fail(void **state)
{
	struct scram_secret secret = secret_for("pencil", rfc_salt, sizeof(rfc_salt));
	struct scram_server s;
	struct scram_client c;
	const char *err = NULL;

	(void) state;
	scram_server_init(&s, &secret);
	assert_null(scram_server_handle_final(&s, RFC_CLIENT_FINAL, strlen(RFC_CLIENT_FINAL), &err));
	assert_string_equal(err, "SCRAM exchange in wrong state");
	assert_null(scram_server_handle_first(&s, RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST), &err));
	scram_server_free(&s);

	assert_true(scram_client_init_password(&c, "pencil"));
	assert_null(scram_client_handle_server_first(&c, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), &err));
	assert_string_equal(err, "SCRAM exchange in wrong state");
	assert_false(scram_client_verify_server_final(&c, RFC_SERVER_FINAL, strlen(RFC_SERVER_FINAL), NULL));
	scram_client_free(&c);
}

/*
 * Every prefix of a valid message is fed in. Some prefixes are valid
 * messages themselves (a shorter nonce, a smaller iteration count); the
 * others must fail cleanly.
 */
static void test_truncated_messages_fail_without_crashing(void **state)
{
	static const char shortest_first[] = "n,,n=user,r=r";
	struct scram_secret secret = secret_for(RFC_PASSWORD, rfc_salt, sizeof(rfc_salt));
	size_t len, iterations_at = strlen(RFC_SERVER_FIRST) - strlen("096");

	(void) state;
	for (len = 0; len <= strlen(RFC_CLIENT_FIRST); len++) {
		struct scram_server s;
		const char *err = NULL;
		char *first;

		scram_server_init(&s, &secret);
		first = scram_server_handle_first(&s, RFC_CLIENT_FIRST, len, &err);
		assert_true((first != NULL) == (len >= strlen(shortest_first)));
		free(first);
		scram_server_free(&s);
	}
	for (len = 0; len <= strlen(RFC_CLIENT_FINAL); len++) {
		struct scram_server s;
		const char *err = NULL;
		char *final;

		scram_server_init(&s, &secret);
		scram_server_set_nonce(&s, RFC_SERVER_NONCE);
		free(scram_server_handle_first(&s, RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST), &err));
		final = scram_server_handle_final(&s, RFC_CLIENT_FINAL, len, &err);
		assert_true((final != NULL) == (len == strlen(RFC_CLIENT_FINAL)));
		free(final);
		scram_server_free(&s);
	}
	for (len = 0; len <= strlen(RFC_SERVER_FIRST); len++) {
		struct scram_client c;
		const char *err = NULL;
		char *final;

		assert_true(scram_client_init_password(&c, RFC_PASSWORD));
		scram_client_set_nonce(&c, RFC_CLIENT_NONCE);
		free(scram_client_first(&c));
		/* "...,i=4", "i=40", "i=409" are valid iteration counts */
		final = scram_client_handle_server_first(&c, RFC_SERVER_FIRST, len, &err);
		assert_true((final != NULL) == (len >= iterations_at));
		free(final);
		scram_client_free(&c);
	}
}

/* Deterministic noise, so a failure can be replayed. */
static uint32_t next_random(uint32_t *seed)
{
	*seed = *seed * 1103515245u + 12345u;
	return *seed >> 8;
}

static void test_random_bytes_fail_without_crashing(void **state)
{
	static const char alphabet[] = "nyprsicvpe=,abc+/0123456789AB\x01\xff";
	struct scram_secret secret = secret_for(RFC_PASSWORD, rfc_salt, sizeof(rfc_salt));
	uint32_t seed = 7;
	char buf[96];
	int round;

	(void) state;
	for (round = 0; round < 2000; round++) {
		size_t len = next_random(&seed) % sizeof(buf), i;
		struct scram_server s;
		struct scram_client c;
		const char *err = NULL;
		char *msg;

		for (i = 0; i < len; i++)
			buf[i] = alphabet[next_random(&seed) % (sizeof(alphabet) - 1)];
		scram_server_init(&s, &secret);
		free(scram_server_handle_first(&s, buf, len, &err));
		scram_server_free(&s);

		scram_server_init(&s, &secret);
		free(scram_server_handle_first(&s, "n,,n=,r=abc", 11, &err));
		assert_null(scram_server_handle_final(&s, buf, len, &err));
		scram_server_free(&s);

		assert_true(scram_client_init_password(&c, RFC_PASSWORD));
		scram_client_set_nonce(&c, RFC_CLIENT_NONCE);
		free(scram_client_first(&c));
		assert_null(scram_client_handle_server_first(&c, buf, len, &err));
		scram_client_free(&c);

		assert_true(scram_client_init_password(&c, RFC_PASSWORD));
		scram_client_set_nonce(&c, RFC_CLIENT_NONCE);
		free(scram_client_first(&c));
		msg = scram_client_handle_server_first(&c, RFC_SERVER_FIRST, strlen(RFC_SERVER_FIRST), &err);
		free(msg);
		assert_false(scram_client_verify_server_final(&c, buf, len, &err));
		scram_client_free(&c);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_client_reproduces_rfc7677_exchange),
		cmocka_unit_test(test_server_accepts_rfc7677_client),
		cmocka_unit_test(test_secret_from_rfc_password_matches_postgresql_text),
		cmocka_unit_test(test_server_with_parsed_secret_accepts_rfc_client_final),
		cmocka_unit_test(test_secret_written_by_postgresql_is_reproduced_from_password),
		cmocka_unit_test(test_malformed_secrets_are_rejected),
		cmocka_unit_test(test_secret_from_password_rejects_unusable_parameters),
		cmocka_unit_test(test_correct_password_succeeds_and_server_recovers_client_key),
		cmocka_unit_test(test_wrong_password_fails_with_password_authentication_failed),
		cmocka_unit_test(test_empty_password_still_runs_the_exchange),
		cmocka_unit_test(test_client_first_is_postgresql_shaped),
		cmocka_unit_test(test_server_nonce_extends_client_nonce_by_24_characters),
		cmocka_unit_test(test_user_name_is_escaped_in_client_first),
		cmocka_unit_test(test_tampered_nonce_in_client_final_is_rejected),
		cmocka_unit_test(test_server_nonce_not_extending_ours_is_rejected),
		cmocka_unit_test(test_forged_server_final_is_rejected),
		cmocka_unit_test(test_recovered_client_key_logs_into_server_with_same_secret),
		cmocka_unit_test(test_recovered_client_key_with_other_salt_fails_with_secret_mismatch),
		cmocka_unit_test(test_recovered_client_key_with_other_iterations_fails_with_secret_mismatch),
		cmocka_unit_test(test_channel_binding_attribute_must_repeat_gs2_flag),
		cmocka_unit_test(test_client_first_extensions_after_nonce_are_ignored),
		cmocka_unit_test(test_malformed_client_first_fails),
		cmocka_unit_test(test_client_first_with_embedded_nul_fails),
		cmocka_unit_test(test_channel_binding_and_authzid_are_refused_by_name),
		cmocka_unit_test(test_malformed_client_final_fails),
		cmocka_unit_test(test_malformed_server_first_fails),
		cmocka_unit_test(test_iteration_count_below_one_is_rejected_by_name),
		cmocka_unit_test(test_steps_out_of_order_fail),
		cmocka_unit_test(test_truncated_messages_fail_without_crashing),
		cmocka_unit_test(test_random_bytes_fail_without_crashing),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
