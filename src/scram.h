/* SPDX-License-Identifier: PostgreSQL */
/*
 * scram.h - SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it
 * (sasl-authentication.html): the server side that authenticates clients and
 * the client side that logs pgsluice into servers. OpenSSL primitives only.
 */
#ifndef SLUICE_SCRAM_H
#define SLUICE_SCRAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SCRAM_KEY_LEN 32          /* SHA-256 output, bytes */
#define SCRAM_MAX_SALT_LEN 64     /* bytes, decoded */
#define SCRAM_NONCE_LEN 18        /* raw random bytes before base64 (PostgreSQL's) */
#define SCRAM_DEFAULT_ITERATIONS 4096

/* A stored secret: "SCRAM-SHA-256$<iter>:<salt b64>$<StoredKey b64>:<ServerKey b64>". */
struct scram_secret {
	int iterations;
	uint8_t salt[SCRAM_MAX_SALT_LEN];
	size_t salt_len;
	uint8_t stored_key[SCRAM_KEY_LEN];
	uint8_t server_key[SCRAM_KEY_LEN];
};

/* Parse PostgreSQL's secret text. Returns false when malformed. */
bool scram_parse_secret(const char *text, struct scram_secret *out);

/*
 * Derive a secret from a plain password (no SASLprep: ASCII passwords are
 * unchanged by it; non-ASCII ones are used as given). Returns false on
 * OpenSSL failure.
 */
bool scram_secret_from_password(const char *password, const uint8_t *salt, size_t salt_len,
                                int iterations, struct scram_secret *out);

/* ---- server side: pgsluice authenticates a client ---- */

enum scram_server_step { SCRAM_SERVER_INIT, SCRAM_SERVER_SENT_FIRST, SCRAM_SERVER_DONE, SCRAM_SERVER_FAILED };

struct scram_server {
	enum scram_server_step step;
	struct scram_secret secret;
	char *client_first_bare;      /* owned */
	char *server_first;           /* owned */
	char *nonce;                  /* combined client+server nonce, owned */
	uint8_t client_key[SCRAM_KEY_LEN]; /* recovered from the proof on success */
	bool have_client_key;
	char cbind_flag;              /* gs2 flag of client-first, 'n' or 'y': client-final must repeat it */
};

/* Start an exchange for a stored secret. Never fails. */
void scram_server_init(struct scram_server *s, const struct scram_secret *secret);

/*
 * Handle client-first-message (the SASLInitialResponse data, len bytes; no
 * channel binding: gs2 header "n,," or "y,,"). On success returns a malloc'd
 * server-first-message (caller frees) and advances the step. On a malformed
 * message returns NULL and sets *err to a static description.
 */
char *scram_server_handle_first(struct scram_server *s, const char *msg, size_t len,
                                const char **err);

/*
 * Handle client-final-message: checks channel binding "biws"/"eSws", the
 * nonce and the proof. On a correct proof returns a malloc'd
 * server-final-message ("v=...") and stores the recovered ClientKey in
 * s->client_key. Returns NULL with *err set on a malformed message or wrong
 * password (then *err is "password authentication failed").
 */
char *scram_server_handle_final(struct scram_server *s, const char *msg, size_t len,
                                const char **err);

/* Free what the exchange owns; s may be reused after scram_server_init. */
void scram_server_free(struct scram_server *s);

/*
 * Test hook: use this server nonce part (base64 text) instead of a random
 * one. Call between scram_server_init and handle_first. Copied; on OOM the
 * exchange is marked failed.
 */
void scram_server_set_nonce(struct scram_server *s, const char *server_nonce);

/* ---- client side: pgsluice logs into a server ---- */

enum scram_client_step { SCRAM_CLIENT_INIT, SCRAM_CLIENT_SENT_FIRST,
                         SCRAM_CLIENT_GOT_FIRST /* server-first read, the proof not made yet */,
                         SCRAM_CLIENT_SENT_FINAL,
                         SCRAM_CLIENT_DONE, SCRAM_CLIENT_FAILED };

struct scram_client {
	enum scram_client_step step;
	char *password;               /* owned; NULL when keys are given */
	bool have_keys;               /* ClientKey+ServerKey known (SCRAM pass-through) */
	uint8_t client_key[SCRAM_KEY_LEN];
	uint8_t server_key[SCRAM_KEY_LEN];
	struct scram_secret secret;   /* salt/iterations the keys belong to, when have_keys */
	char *client_nonce;           /* owned */
	char *client_first_bare;      /* owned */
	char *auth_message;           /* owned */
	uint8_t server_signature[SCRAM_KEY_LEN];
	char *user;                   /* owned; sent as n=, NULL sends "" as libpq does */
	uint8_t cbind_data[64];       /* tls-server-end-point: hash of the server certificate */
	size_t cbind_len;             /* 0: no channel binding (gs2 header "n,,") */
	char *server_first;           /* owned; server-first-message while SCRAM_CLIENT_GOT_FIRST */
	struct scram_secret server;   /* the server's salt and iterations (keys unused) */
};

/* SCRAM-SHA-256-PLUS's channel binding type (RFC 5929). */
#define SCRAM_CBIND_TYPE "tls-server-end-point"

/*
 * Bind this exchange to the TLS channel (SCRAM-SHA-256-PLUS): data is the
 * tls-server-end-point value, the hash of the server's certificate (len
 * bytes, at most 64; copied). Call before scram_client_first. Returns false
 * when len is out of range.
 */
bool scram_client_set_channel_binding(struct scram_client *c, const uint8_t *data, size_t len);

/* Start an exchange with a plain password (copied). Returns false on OOM. */
bool scram_client_init_password(struct scram_client *c, const char *password);

/*
 * Start an exchange with keys recovered from a client's own SCRAM login
 * (PgBouncer's pass-through): works only when the server's salt and
 * iterations equal secret's; otherwise handle_server_first fails with
 * *err "SCRAM secret of pgsluice does not match the server's".
 */
void scram_client_init_keys(struct scram_client *c, const struct scram_secret *secret,
                            const uint8_t client_key[SCRAM_KEY_LEN]);

/*
 * Test hook: use this client nonce (text) instead of a random one. Copied;
 * on OOM the exchange is marked failed so scram_client_first returns NULL.
 */
void scram_client_set_nonce(struct scram_client *c, const char *nonce);

/*
 * Test hook: send this user name in client-first-message instead of the
 * empty one PostgreSQL's libpq sends (the server takes the role from the
 * startup packet); lets a test replay RFC 7677's exchange byte for byte.
 * Copied; false on OOM.
 */
bool scram_client_set_user(struct scram_client *c, const char *user);

/* The client-first-message "n,,n=,r=<nonce>" (malloc'd, caller frees), or NULL on OOM. */
char *scram_client_first(struct scram_client *c);

/*
 * Handle server-first-message; returns the malloc'd client-final-message
 * with the proof, or NULL with *err set (malformed, nonce mismatch,
 * iteration count out of range, keys not usable).
 */
char *scram_client_handle_server_first(struct scram_client *c, const char *msg, size_t len,
                                       const char **err);

/*
 * handle_server_first in two halves, so that the PBKDF2 between them can run
 * off the event loop. First half: parse server-first-message (len bytes,
 * copied) and keep the server's salt and iteration count in c->server; the
 * count goes to *iterations when not NULL, for the caller to cap it. False
 * with *err set when malformed or out of step (the exchange is failed then).
 */
bool scram_client_read_server_first(struct scram_client *c, const char *msg, size_t len,
                                    int *iterations, const char **err);

/*
 * True after read_server_first when the client key must come from the
 * password: the caller then computes scram_salted_password(c->password,
 * c->server.salt, c->server.salt_len, c->server.iterations) (copy what a
 * worker thread needs: c may be freed meanwhile). False with SCRAM
 * pass-through keys, which need no PBKDF2.
 */
bool scram_client_needs_salted_password(const struct scram_client *c);

/*
 * Hi(password, salt, iterations) of RFC 5802 (PBKDF2-HMAC-SHA-256) into out.
 * Touches no shared state: safe on any thread (OpenSSL's PKCS5_PBKDF2_HMAC).
 * False on OpenSSL failure or iterations < 1. Costs time linear in iterations
 * (4096: about 2 ms; 100000: about 50 ms on one core).
 */
bool scram_salted_password(const char *password, const uint8_t *salt, size_t salt_len,
                           int iterations, uint8_t out[SCRAM_KEY_LEN]);

/*
 * Second half: the malloc'd client-final-message with the proof made from
 * salted (the SaltedPassword; NULL with pass-through keys). NULL with *err
 * set on failure (then the exchange is failed).
 */
char *scram_client_final(struct scram_client *c, const uint8_t salted[SCRAM_KEY_LEN],
                         const char **err);

/* Verify server-final-message ("v=..."); false with *err set if it does not match. */
bool scram_client_verify_server_final(struct scram_client *c, const char *msg, size_t len,
                                      const char **err);

void scram_client_free(struct scram_client *c);

#endif
