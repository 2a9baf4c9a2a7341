/* SPDX-License-Identifier: PostgreSQL */
/* tls.c - see tls.h. */
#include "tls.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "config.h"
#include "util.h"

static bool parse_mode(const char *text, enum tls_mode *mode)
{
	static const char *const names[] = { "disable", "allow", "prefer", "require", "verify-ca", "verify-full" };
	for (int i = 0; i < 6; i++)
		if (strcasecmp(text, names[i]) == 0) {
			*mode = (enum tls_mode)i;
			return true;
		}
	return false;
}

static int protocol_version(const char *name, size_t n)
{
	static const struct { const char *name; int version; } map[] = {
		{ "tlsv1", TLS1_VERSION }, { "tlsv1.0", TLS1_VERSION }, { "tlsv1.1", TLS1_1_VERSION },
		{ "tlsv1.2", TLS1_2_VERSION }, { "tlsv1.3", TLS1_3_VERSION },
	};
	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		if (strlen(map[i].name) == n && strncasecmp(name, map[i].name, n) == 0)
			return map[i].version;
	return 0;
}

/* PgBouncer's protocol names: "secure" (TLS 1.2+), "all", or a list. */
static bool set_protocols(SSL_CTX *ctx, const char *text)
{
	int lo = 0, hi = 0;
	if (strcasecmp(text, "secure") == 0 || strcasecmp(text, "default") == 0) {
		lo = TLS1_2_VERSION;
	} else if (strcasecmp(text, "all") == 0 || strcasecmp(text, "legacy") == 0) {
		lo = TLS1_VERSION;
	} else {
		for (const char *p = text; *p;) {
			size_t n = strcspn(p, ", ");
			int v = n ? protocol_version(p, n) : 0;
			if (n && !v)
				return false;
			if (v && (!lo || v < lo))
				lo = v;
			if (v > hi)
				hi = v;
			p += n;
			p += strspn(p, ", ");
		}
		if (!lo)
			return false;
	}
	return SSL_CTX_set_min_proto_version(ctx, lo) == 1 && SSL_CTX_set_max_proto_version(ctx, hi) == 1;
}

static bool set_ciphers(SSL_CTX *ctx, const char *text)
{
	if (strcasecmp(text, "default") == 0)
		return true;
	if (strcasecmp(text, "secure") == 0 || strcasecmp(text, "fast") == 0 || strcasecmp(text, "normal") == 0)
		text = "HIGH:!aNULL:!MD5:!RC4";
	else if (strcasecmp(text, "all") == 0)
		text = "ALL:!aNULL";
	return SSL_CTX_set_cipher_list(ctx, text) == 1;
}

/*
 * client_tls_ecdhcurve (PgBouncer): "auto" and "none" keep OpenSSL's groups
 * (OpenSSL 1.1+ always negotiates ECDHE itself, so PgBouncer's "none" changes
 * nothing either); a curve name (prime256v1, secp384r1, P-384, X25519...)
 * is the only group offered, for TLS 1.2 and 1.3 alike.
 */
static bool set_ecdh_curve(SSL_CTX *ctx, const char *name)
{
	if (!*name || strcasecmp(name, "auto") == 0 || strcasecmp(name, "none") == 0)
		return true;
	return SSL_CTX_set1_groups_list(ctx, name) == 1;
}

/*
 * client_tls_dheparams (PgBouncer): "auto" gives TLS 1.2's DHE suites
 * OpenSSL's built-in group matched to the key's strength; "none" leaves DHE
 * without parameters, so those suites are never chosen. "legacy" (1024-bit)
 * is taken as "auto": OpenSSL's default security level refuses 1024-bit DH.
 */
static bool set_dh_params(SSL_CTX *ctx, const char *value)
{
	if (strcasecmp(value, "none") == 0)
		return true;
	if (strcasecmp(value, "auto") == 0 || strcasecmp(value, "legacy") == 0)
		return SSL_CTX_set_dh_auto(ctx, 1) == 1;
	return false;
}

const char *tls_error_text(unsigned long err)
{
	static char buf[256];
	if (!err)
		return "unknown TLS error";
	const char *reason = ERR_reason_error_string(err);
	snprintf(buf, sizeof(buf), "%s", reason ? reason : ERR_error_string(err, NULL));
	return buf;
}

static bool fail(char *errbuf, size_t errlen, const char *key, const char *what)
{
	unsigned long e = ERR_get_error();
	snprintf(errbuf, errlen, "%s: %s%s%s", key, what, e ? ": " : "", e ? tls_error_text(e) : "");
	ERR_clear_error();
	return false;
}

/* Load the key pair and CA of one leg; prefix is "client" or "server" for messages. */
static bool load_files(SSL_CTX *ctx, const char *prefix, const char *key, const char *cert,
                       const char *ca, char *errbuf, size_t errlen)
{
	char name[64];
	if (*cert || *key) {
		snprintf(name, sizeof(name), "%s_tls_cert_file", prefix);
		if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1)
			return fail(errbuf, errlen, name, "could not load the certificate");
		snprintf(name, sizeof(name), "%s_tls_key_file", prefix);
		if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
			return fail(errbuf, errlen, name, "could not load the private key");
		if (SSL_CTX_check_private_key(ctx) != 1)
			return fail(errbuf, errlen, name, "the private key does not match the certificate");
	}
	if (*ca) {
		snprintf(name, sizeof(name), "%s_tls_ca_file", prefix);
		int loaded = strcmp(ca, TLS_SYSTEM_CA) == 0 ? SSL_CTX_set_default_verify_paths(ctx)
		                                           : SSL_CTX_load_verify_locations(ctx, ca, NULL);
		if (loaded != 1)
			return fail(errbuf, errlen, name, "could not load the CA certificates");
	}
	return true;
}

static SSL_CTX *accept_ctx(const struct sluice_config *cfg, enum tls_mode mode, char *errbuf, size_t errlen)
{
	if (!*cfg->client_tls_key_file || !*cfg->client_tls_cert_file) {
		snprintf(errbuf, errlen, "client_tls_sslmode = %s needs client_tls_key_file and client_tls_cert_file",
		         cfg->client_tls_sslmode);
		return NULL;
	}
	if (mode >= TLS_VERIFY_CA && !*cfg->client_tls_ca_file) {
		snprintf(errbuf, errlen, "client_tls_sslmode = %s needs client_tls_ca_file", cfg->client_tls_sslmode);
		return NULL;
	}
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx) {
		fail(errbuf, errlen, "client_tls_sslmode", "could not create a TLS context");
		return NULL;
	}
	bool ok = load_files(ctx, "client", cfg->client_tls_key_file, cfg->client_tls_cert_file,
	                     cfg->client_tls_ca_file, errbuf, errlen);
	if (ok && !set_protocols(ctx, cfg->client_tls_protocols))
		ok = fail(errbuf, errlen, "client_tls_protocols", "invalid protocol list");
	if (ok && !set_ciphers(ctx, cfg->client_tls_ciphers))
		ok = fail(errbuf, errlen, "client_tls_ciphers", "invalid cipher list");
	if (ok && *cfg->client_tls13_ciphers && SSL_CTX_set_ciphersuites(ctx, cfg->client_tls13_ciphers) != 1)
		ok = fail(errbuf, errlen, "client_tls13_ciphers", "invalid TLS 1.3 cipher suite list");
	if (ok && !set_ecdh_curve(ctx, cfg->client_tls_ecdhcurve))
		ok = fail(errbuf, errlen, "client_tls_ecdhcurve", "unknown curve");
	if (ok && !set_dh_params(ctx, cfg->client_tls_dheparams))
		ok = fail(errbuf, errlen, "client_tls_dheparams", "expected none, auto or legacy");
	if (!ok) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	/* verify-ca / verify-full: every client shows a certificate of client_tls_ca_file */
	if (mode >= TLS_VERIFY_CA)
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
	return ctx;
}

static SSL_CTX *connect_ctx(const struct sluice_config *cfg, enum tls_mode mode, char *errbuf, size_t errlen)
{
	if (mode >= TLS_VERIFY_CA && !*cfg->server_tls_ca_file) {
		snprintf(errbuf, errlen, "server_tls_sslmode = %s needs server_tls_ca_file", cfg->server_tls_sslmode);
		return NULL;
	}
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx) {
		fail(errbuf, errlen, "server_tls_sslmode", "could not create a TLS context");
		return NULL;
	}
	bool ok = load_files(ctx, "server", cfg->server_tls_key_file, cfg->server_tls_cert_file,
	                     cfg->server_tls_ca_file, errbuf, errlen);
	if (ok && !set_protocols(ctx, cfg->server_tls_protocols))
		ok = fail(errbuf, errlen, "server_tls_protocols", "invalid protocol list");
	if (ok && !set_ciphers(ctx, cfg->server_tls_ciphers))
		ok = fail(errbuf, errlen, "server_tls_ciphers", "invalid cipher list");
	if (ok && *cfg->server_tls13_ciphers && SSL_CTX_set_ciphersuites(ctx, cfg->server_tls13_ciphers) != 1)
		ok = fail(errbuf, errlen, "server_tls13_ciphers", "invalid TLS 1.3 cipher suite list");
	if (!ok) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

bool tls_load(const struct sluice_config *cfg, struct tls_config *out, char *errbuf, size_t errlen)
{
	struct tls_config t = { TLS_DISABLE, TLS_DISABLE, NULL, NULL };
	if (!parse_mode(cfg->client_tls_sslmode, &t.client_mode)) {
		snprintf(errbuf, errlen, "invalid client_tls_sslmode \"%s\": expected disable, allow, prefer, "
		         "require, verify-ca or verify-full", cfg->client_tls_sslmode);
		return false;
	}
	if (!parse_mode(cfg->server_tls_sslmode, &t.server_mode)) {
		snprintf(errbuf, errlen, "invalid server_tls_sslmode \"%s\": expected disable, allow, prefer, "
		         "require, verify-ca or verify-full", cfg->server_tls_sslmode);
		return false;
	}
	if (t.client_mode != TLS_DISABLE && !(t.accept_ctx = accept_ctx(cfg, t.client_mode, errbuf, errlen)))
		return false;
	if (t.server_mode != TLS_DISABLE && !(t.connect_ctx = connect_ctx(cfg, t.server_mode, errbuf, errlen))) {
		SSL_CTX_free(t.accept_ctx);
		return false;
	}
	*out = t;
	return true;
}

void tls_free(struct tls_config *t)
{
	SSL_CTX_free(t->accept_ctx);
	SSL_CTX_free(t->connect_ctx);
	t->accept_ctx = t->connect_ctx = NULL;
}

SSL *tls_new_connect(const struct tls_config *t, const char *host)
{
	SSL *ssl = SSL_new(t->connect_ctx);
	if (!ssl)
		return NULL;
	if (host && *host && host[0] != '/') {
		unsigned char addr[16];
		bool is_ip = inet_pton(AF_INET, host, addr) == 1 || inet_pton(AF_INET6, host, addr) == 1;
		if (!is_ip)
			SSL_set_tlsext_host_name(ssl, host);    /* SNI carries no IP literals (RFC 6066) */
		if (t->server_mode == TLS_VERIFY_FULL) {
			if (is_ip)
				X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host);
			else
				SSL_set1_host(ssl, host);
		}
	}
	SSL_set_verify(ssl, t->server_mode >= TLS_VERIFY_CA ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
	return ssl;
}

bool tls_peer_common_name(SSL *ssl, char *out, size_t size)
{
	X509 *cert = SSL_get1_peer_certificate(ssl);
	if (!cert)
		return false;
	bool ok = SSL_get_verify_result(ssl) == X509_V_OK &&
	          X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, out, (int)size) > 0;
	X509_free(cert);
	return ok;
}

bool tls_server_end_point(SSL *ssl, unsigned char *out, size_t *len)
{
	X509 *cert = SSL_get1_peer_certificate(ssl);
	if (!cert)
		return false;
	int md_nid = NID_undef;
	const EVP_MD *md = NULL;
	/* RFC 5929 4.1: the certificate's signature hash, MD5 and SHA-1 raised to SHA-256 */
	if (OBJ_find_sigid_algs(X509_get_signature_nid(cert), &md_nid, NULL) && md_nid != NID_md5 &&
	    md_nid != NID_sha1)
		md = EVP_get_digestbynid(md_nid);
	if (!md)
		md = EVP_sha256();
	unsigned int n = 0;
	bool ok = X509_digest(cert, md, out, &n) == 1;
	X509_free(cert);
	*len = n;
	return ok;
}
