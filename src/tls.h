/* SPDX-License-Identifier: PostgreSQL */
/*
 * tls.h - TLS on both legs with OpenSSL: the context pgsluice accepts
 * clients with (client_tls_*) and the one it connects to servers with
 * (server_tls_*), built from PgBouncer's keys and rebuilt on reload.
 */
#ifndef SLUICE_TLS_H
#define SLUICE_TLS_H

#include <stdbool.h>
#include <stddef.h>

typedef struct ssl_ctx_st SSL_CTX;
typedef struct ssl_st SSL;
struct sluice_config;

/* libpq's sslmode values, in increasing strictness (libpq-ssl.html). */
enum tls_mode { TLS_DISABLE, TLS_ALLOW, TLS_PREFER, TLS_REQUIRE, TLS_VERIFY_CA, TLS_VERIFY_FULL };

struct tls_config {
	enum tls_mode client_mode;     /* client_tls_sslmode */
	enum tls_mode server_mode;     /* server_tls_sslmode */
	SSL_CTX *accept_ctx;           /* towards clients; NULL when client_mode is disable */
	SSL_CTX *connect_ctx;          /* towards servers; NULL when server_mode is disable */
};

/* A *_tls_ca_file value meaning OpenSSL's default CA locations (PgBouncer's sample ini). */
#define TLS_SYSTEM_CA "<system default>"

/*
 * Build both contexts from cfg: certificates, keys and CAs loaded now (so a
 * bad file fails start-up or the reload, not a login), protocols ("secure",
 * "all", or a list like "tlsv1.2,tlsv1.3") and ciphers ("default", "secure",
 * "fast", "normal", "all", or an OpenSSL cipher list; TLS 1.3 suites from
 * client_tls13_ciphers, SSL_CTX_set_ciphersuites(3)). Returns false with
 * errbuf naming the key and OpenSSL's reason; *out is then untouched.
 */
bool tls_load(const struct sluice_config *cfg, struct tls_config *out, char *errbuf, size_t errlen);

/* Free the contexts (connections keep theirs alive by reference). */
void tls_free(struct tls_config *t);

/*
 * A new SSL object to connect to host with mode: SNI and, for verify-full,
 * the host name check (SSL_set1_host); verify-ca and verify-full verify the
 * chain. NULL on OOM.
 */
SSL *tls_new_connect(const struct tls_config *t, const char *host);

/*
 * The common name of the peer certificate that was verified, into out
 * (size bytes); false when there is none (auth_type = cert).
 */
bool tls_peer_common_name(SSL *ssl, char *out, size_t size);

/*
 * The tls-server-end-point channel binding data of the server's certificate
 * on ssl (RFC 5929 4.1; PostgreSQL's SCRAM-SHA-256-PLUS): its hash with the
 * certificate's signature digest (SHA-256 for MD5/SHA-1). out holds
 * EVP_MAX_MD_SIZE bytes; *len gets the length. False when there is no certificate.
 */
bool tls_server_end_point(SSL *ssl, unsigned char *out, size_t *len);

/* The last OpenSSL error as text, for messages ("certificate verify failed"). */
const char *tls_error_text(unsigned long err);

#endif
