/* SPDX-License-Identifier: PostgreSQL */
/*
 * scram.c - SCRAM-SHA-256 in both directions, message for message as
 * PostgreSQL's auth-scram.c (server) and fe-auth-scram.c (client) speak it.
 *
 * Messages arrive as (pointer, length) from the wire; each handler first
 * makes a NUL-terminated copy and then reads attributes without modifying
 * it, so that the exact bytes received can go into the AuthMessage.
 */
#include "scram.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#define SECRET_PREFIX "SCRAM-SHA-256$"

/* Characters of base64 text for n bytes, without the NUL. */
#define B64_LEN(n) (4 * (((n) + 2) / 3))

/* Longest base64 text we ever decode: a salt of SCRAM_MAX_SALT_LEN bytes. */
#define B64_MAX_TEXT B64_LEN(SCRAM_MAX_SALT_LEN)

#define ERR_NOMEM "out of memory"
#define ERR_CRYPTO "could not compute SCRAM keys"
#define ERR_STATE "SCRAM exchange in wrong state"
#define ERR_AUTH_FAILED "password authentication failed"
#define ERR_SECRET_MISMATCH "SCRAM secret of pgsluice does not match the server's"

/* ---- primitives ---- */

static void b64_encode(const uint8_t *data, size_t len, char *out)
{
	EVP_EncodeBlock((unsigned char *) out, data, (int) len);
}

static bool is_b64_char(char ch)
{
	return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
	       (ch >= '0' && ch <= '9') || ch == '+' || ch == '/';
}

/*
 * Strict base64: EVP_DecodeBlock alone would skip surrounding blanks and
 * count padding as data, so validate first and subtract the padding.
 */
static bool b64_decode(const char *text, size_t text_len, uint8_t *out, size_t out_cap,
                       size_t *out_len)
{
	uint8_t tmp[B64_MAX_TEXT / 4 * 3];
	size_t pad = 0, i, full;

	if (text_len == 0 || text_len % 4 != 0 || text_len > B64_MAX_TEXT)
		return false;
	if (text[text_len - 1] == '=')
		pad = text[text_len - 2] == '=' ? 2 : 1;
	for (i = 0; i < text_len - pad; i++)
		if (!is_b64_char(text[i]))
			return false;
	full = text_len / 4 * 3;
	if (full - pad > out_cap)
		return false;
	if (EVP_DecodeBlock(tmp, (const unsigned char *) text, (int) text_len) != (int) full)
		return false;
	memcpy(out, tmp, full - pad);
	*out_len = full - pad;
	OPENSSL_cleanse(tmp, sizeof(tmp));
	return true;
}

static bool hmac_sha256(const uint8_t *key, size_t key_len, const void *data, size_t len,
                        uint8_t out[SCRAM_KEY_LEN])
{
	unsigned int out_len = 0;

	return HMAC(EVP_sha256(), key, (int) key_len, data, len, out, &out_len) != NULL &&
	       out_len == SCRAM_KEY_LEN;
}

static bool sha256(const uint8_t *data, size_t len, uint8_t out[SCRAM_KEY_LEN])
{
	unsigned int out_len = 0;

	return EVP_Digest(data, len, out, &out_len, EVP_sha256(), NULL) == 1 &&
	       out_len == SCRAM_KEY_LEN;
}

/* Hi() of RFC 5802 is PBKDF2 with HMAC-SHA-256. */
static bool salted_password(const char *password, const uint8_t *salt, size_t salt_len,
                            int iterations, uint8_t out[SCRAM_KEY_LEN])
{
	size_t len = strlen(password);

	if (len > INT_MAX || salt_len > INT_MAX || iterations < 1)
		return false;
	return PKCS5_PBKDF2_HMAC(password, (int) len, salt, (int) salt_len, iterations,
	                         EVP_sha256(), SCRAM_KEY_LEN, out) == 1;
}

static bool keys_from_salted(const uint8_t salted[SCRAM_KEY_LEN], uint8_t client_key[SCRAM_KEY_LEN],
                             uint8_t server_key[SCRAM_KEY_LEN])
{
	return hmac_sha256(salted, SCRAM_KEY_LEN, "Client Key", 10, client_key) &&
	       hmac_sha256(salted, SCRAM_KEY_LEN, "Server Key", 10, server_key);
}

/* The concatenation of a NULL-terminated list of strings, malloc'd. */
static __attribute__((sentinel)) char *concat(const char *first, ...)
{
	va_list ap;
	const char *s;
	size_t len = 0;
	char *out, *w;

	va_start(ap, first);
	for (s = first; s; s = va_arg(ap, const char *))
		len += strlen(s);
	va_end(ap);
	out = malloc(len + 1);
	if (!out)
		return NULL;
	w = out;
	va_start(ap, first);
	for (s = first; s; s = va_arg(ap, const char *)) {
		size_t n = strlen(s);
		memcpy(w, s, n);
		w += n;
	}
	va_end(ap);
	*w = '\0';
	return out;
}

static char *random_nonce(void)
{
	uint8_t raw[SCRAM_NONCE_LEN];
	char *out;

	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return NULL;
	out = malloc(B64_LEN(SCRAM_NONCE_LEN) + 1);
	if (out)
		b64_encode(raw, sizeof(raw), out);
	return out;
}

/* RFC 5802 "printable": visible ASCII except ',', the attribute separator. */
static bool is_printable(const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (s[i] < 0x21 || s[i] > 0x7e || s[i] == ',')
			return false;
	return true;
}

/* Digits only (PostgreSQL's strtol would also take blanks and signs), 1..INT_MAX. */
static bool parse_iterations(const char *s, size_t len, int *out)
{
	long long v = 0;
	size_t i;

	if (len == 0 || len > 10)
		return false;
	for (i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (s[i] - '0');
	}
	if (v < 1 || v > INT_MAX)
		return false;
	*out = (int) v;
	return true;
}

/* ---- message reading ---- */

/* A NUL-terminated copy, refusing what PostgreSQL refuses: empty input, embedded NULs. */
static char *copy_message(const char *msg, size_t len, const char **err)
{
	char *copy;

	if (!msg || len == 0) {
		*err = "malformed SCRAM message (empty message)";
		return NULL;
	}
	if (memchr(msg, '\0', len)) {
		*err = "malformed SCRAM message (length mismatch)";
		return NULL;
	}
	copy = malloc(len + 1);
	if (!copy) {
		*err = ERR_NOMEM;
		return NULL;
	}
	memcpy(copy, msg, len);
	copy[len] = '\0';
	return copy;
}

struct attr {
	char name;
	const char *value;            /* points into the message; not terminated */
	size_t len;
};

/*
 * Read "x=value" at *pos and step past it and the ',' after it. A ',' that
 * ends the message is malformed: the empty attribute after it is not "x=".
 */
static bool next_attr(const char **pos, struct attr *a)
{
	const char *p = *pos;

	if (!((p[0] >= 'a' && p[0] <= 'z') || (p[0] >= 'A' && p[0] <= 'Z')) || p[1] != '=')
		return false;
	a->name = p[0];
	a->value = p + 2;
	a->len = strcspn(a->value, ",");
	p = a->value + a->len;
	if (*p == ',' && *++p == '\0')
		return false;
	*pos = p;
	return true;
}

static bool expect_attr(const char **pos, char name, struct attr *a, const char **err)
{
	if (next_attr(pos, a) && a->name == name)
		return true;
	switch (name) {
	case 'n': *err = "malformed SCRAM message (attribute \"n\" expected)"; break;
	case 'r': *err = "malformed SCRAM message (attribute \"r\" expected)"; break;
	case 's': *err = "malformed SCRAM message (attribute \"s\" expected)"; break;
	case 'i': *err = "malformed SCRAM message (attribute \"i\" expected)"; break;
	case 'c': *err = "malformed SCRAM message (attribute \"c\" expected)"; break;
	case 'p': *err = "malformed SCRAM message (attribute \"p\" expected)"; break;
	case 'v': *err = "malformed SCRAM message (attribute \"v\" expected)"; break;
	default: *err = "malformed SCRAM message"; break;
	}
	return false;
}

/* ---- secrets ---- */

bool scram_parse_secret(const char *text, struct scram_secret *out)
{
	struct scram_secret s;
	const char *p;
	size_t n, key_len;

	if (!text || strncmp(text, SECRET_PREFIX, strlen(SECRET_PREFIX)) != 0)
		return false;
	memset(&s, 0, sizeof(s));
	p = text + strlen(SECRET_PREFIX);
	n = strcspn(p, ":");
	if (p[n] != ':' || !parse_iterations(p, n, &s.iterations))
		return false;
	p += n + 1;
	n = strcspn(p, "$");
	if (p[n] != '$' || !b64_decode(p, n, s.salt, sizeof(s.salt), &s.salt_len))
		return false;
	p += n + 1;
	n = strcspn(p, ":");
	if (p[n] != ':' || !b64_decode(p, n, s.stored_key, SCRAM_KEY_LEN, &key_len) ||
	    key_len != SCRAM_KEY_LEN)
		return false;
	p += n + 1;
	if (!b64_decode(p, strlen(p), s.server_key, SCRAM_KEY_LEN, &key_len) ||
	    key_len != SCRAM_KEY_LEN)
		return false;
	*out = s;
	return true;
}

bool scram_secret_from_password(const char *password, const uint8_t *salt, size_t salt_len,
                                int iterations, struct scram_secret *out)
{
	uint8_t salted[SCRAM_KEY_LEN], client_key[SCRAM_KEY_LEN];
	struct scram_secret s;
	bool ok;

	if (!password || !salt || salt_len == 0 || salt_len > SCRAM_MAX_SALT_LEN || iterations < 1)
		return false;
	memset(&s, 0, sizeof(s));
	ok = salted_password(password, salt, salt_len, iterations, salted) &&
	     keys_from_salted(salted, client_key, s.server_key) &&
	     sha256(client_key, SCRAM_KEY_LEN, s.stored_key);
	OPENSSL_cleanse(salted, sizeof(salted));
	OPENSSL_cleanse(client_key, sizeof(client_key));
	if (!ok)
		return false;
	s.iterations = iterations;
	memcpy(s.salt, salt, salt_len);
	s.salt_len = salt_len;
	*out = s;
	return true;
}

/* ---- server side ---- */

void scram_server_init(struct scram_server *s, const struct scram_secret *secret)
{
	memset(s, 0, sizeof(*s));
	s->secret = *secret;
	s->step = SCRAM_SERVER_INIT;
}

void scram_server_set_nonce(struct scram_server *s, const char *server_nonce)
{
	if (s->step != SCRAM_SERVER_INIT)
		return;
	/* Until handle_first, s->nonce holds only the server's part. */
	free(s->nonce);
	s->nonce = strdup(server_nonce);
	if (!s->nonce)
		s->step = SCRAM_SERVER_FAILED;
}

/* The gs2 header: returns where client-first-message-bare starts, or NULL. */
static const char *parse_gs2_header(struct scram_server *s, const char *p, const char **err)
{
	switch (p[0]) {
	case 'n':
	case 'y':
		break;
	case 'p':
		*err = "client requires SCRAM channel binding, but it is not supported";
		return NULL;
	default:
		*err = "malformed SCRAM message (unexpected channel-binding flag)";
		return NULL;
	}
	if (p[1] != ',') {
		*err = "malformed SCRAM message (comma expected)";
		return NULL;
	}
	s->cbind_flag = p[0];
	p += 2;
	if (p[0] == 'a' && p[1] == '=') {
		*err = "client uses authorization identity, but it is not supported";
		return NULL;
	}
	if (p[0] != ',') {
		*err = "malformed SCRAM message (unexpected attribute in client-first-message)";
		return NULL;
	}
	return p + 1;
}

/* Reads client-first-message-bare and sets the combined nonce. */
static bool parse_client_first_bare(struct scram_server *s, const char *bare, const char **err)
{
	const char *p = bare;
	struct attr a, nonce;
	char *client_nonce, *server_nonce = s->nonce;

	if (p[0] == 'm' && p[1] == '=') {
		*err = "client requires an unsupported SCRAM extension";
		return false;
	}
	/* The user name is ignored, as PostgreSQL does: the startup packet named the role. */
	if (!expect_attr(&p, 'n', &a, err) || !expect_attr(&p, 'r', &nonce, err))
		return false;
	if (nonce.len == 0 || !is_printable(nonce.value, nonce.len)) {
		*err = "malformed SCRAM message (invalid client nonce)";
		return false;
	}
	while (*p != '\0') {
		if (!next_attr(&p, &a)) {
			*err = "malformed SCRAM message (garbage at end of client-first-message)";
			return false;
		}
	}
	s->client_first_bare = strdup(bare);
	client_nonce = strndup(nonce.value, nonce.len);
	if (!server_nonce)
		server_nonce = random_nonce();
	s->nonce = NULL;
	if (s->client_first_bare && client_nonce && server_nonce)
		s->nonce = concat(client_nonce, server_nonce, NULL);
	free(client_nonce);
	free(server_nonce);
	if (!s->nonce) {
		*err = ERR_NOMEM;
		return false;
	}
	return true;
}

static char *build_server_first(struct scram_server *s, const char **err)
{
	char salt[B64_LEN(SCRAM_MAX_SALT_LEN) + 1], iterations[16];
	char *reply;

	b64_encode(s->secret.salt, s->secret.salt_len, salt);
	snprintf(iterations, sizeof(iterations), "%d", s->secret.iterations);
	s->server_first = concat("r=", s->nonce, ",s=", salt, ",i=", iterations, NULL);
	reply = s->server_first ? strdup(s->server_first) : NULL;
	if (!reply)
		*err = ERR_NOMEM;
	return reply;
}

char *scram_server_handle_first(struct scram_server *s, const char *msg, size_t len,
                                const char **err)
{
	const char *dummy, *bare;
	char *buf, *reply = NULL;

	if (!err)
		err = &dummy;
	if (s->step != SCRAM_SERVER_INIT) {
		*err = ERR_STATE;
		s->step = SCRAM_SERVER_FAILED;
		return NULL;
	}
	buf = copy_message(msg, len, err);
	if (buf) {
		bare = parse_gs2_header(s, buf, err);
		if (bare && parse_client_first_bare(s, bare, err))
			reply = build_server_first(s, err);
	}
	free(buf);
	s->step = reply ? SCRAM_SERVER_SENT_FIRST : SCRAM_SERVER_FAILED;
	return reply;
}

/*
 * Checks client-final-message up to the proof. On success *without_proof_len
 * is the length of client-final-message-without-proof, which ends at the ','
 * before "p=".
 */
static bool parse_client_final(const struct scram_server *s, const char *buf,
                               size_t *without_proof_len, uint8_t proof[SCRAM_KEY_LEN],
                               const char **err)
{
	const char *p = buf, *attr_start;
	const char *cbind = s->cbind_flag == 'y' ? "eSws" : "biws";
	struct attr a;
	size_t n;

	if (!expect_attr(&p, 'c', &a, err))
		return false;
	/* No channel binding: c= must be the gs2 header of client-first again. */
	if (a.len != 4 || memcmp(a.value, cbind, 4) != 0) {
		*err = "unexpected SCRAM channel-binding attribute in client-final-message";
		return false;
	}
	if (!expect_attr(&p, 'r', &a, err))
		return false;
	if (a.len != strlen(s->nonce) || memcmp(a.value, s->nonce, a.len) != 0) {
		*err = "SCRAM nonce mismatch";
		return false;
	}
	/* Extensions may come before the proof; PostgreSQL skips them too. */
	do {
		attr_start = p;
		if (!next_attr(&p, &a)) {
			*err = "malformed SCRAM message (attribute \"p\" expected)";
			return false;
		}
	} while (a.name != 'p');
	if (*p != '\0') {
		*err = "malformed SCRAM message (garbage at end of client-final-message)";
		return false;
	}
	if (!b64_decode(a.value, a.len, proof, SCRAM_KEY_LEN, &n) || n != SCRAM_KEY_LEN) {
		*err = "malformed SCRAM message (malformed proof in client-final-message)";
		return false;
	}
	*without_proof_len = (size_t) (attr_start - buf) - 1;
	return true;
}

/* Recovers ClientKey from the proof; a match of H(ClientKey) and StoredKey proves the password. */
static char *verify_client_proof(struct scram_server *s, const char *without_proof,
                                 const uint8_t proof[SCRAM_KEY_LEN], const char **err)
{
	uint8_t signature[SCRAM_KEY_LEN], client_key[SCRAM_KEY_LEN], stored_key[SCRAM_KEY_LEN];
	char sig_b64[B64_LEN(SCRAM_KEY_LEN) + 1];
	char *auth, *reply = NULL;
	size_t i;
	bool ok;

	auth = concat(s->client_first_bare, ",", s->server_first, ",", without_proof, NULL);
	if (!auth) {
		*err = ERR_NOMEM;
		return NULL;
	}
	ok = hmac_sha256(s->secret.stored_key, SCRAM_KEY_LEN, auth, strlen(auth), signature);
	for (i = 0; ok && i < SCRAM_KEY_LEN; i++)
		client_key[i] = proof[i] ^ signature[i];
	ok = ok && sha256(client_key, SCRAM_KEY_LEN, stored_key);
	if (!ok) {
		*err = ERR_CRYPTO;
	} else if (CRYPTO_memcmp(stored_key, s->secret.stored_key, SCRAM_KEY_LEN) != 0) {
		*err = ERR_AUTH_FAILED;
	} else if (!hmac_sha256(s->secret.server_key, SCRAM_KEY_LEN, auth, strlen(auth), signature)) {
		*err = ERR_CRYPTO;
	} else {
		b64_encode(signature, SCRAM_KEY_LEN, sig_b64);
		reply = concat("v=", sig_b64, NULL);
		if (!reply)
			*err = ERR_NOMEM;
	}
	if (reply) {
		memcpy(s->client_key, client_key, SCRAM_KEY_LEN);
		s->have_client_key = true;
	}
	OPENSSL_cleanse(client_key, sizeof(client_key));
	free(auth);
	return reply;
}

char *scram_server_handle_final(struct scram_server *s, const char *msg, size_t len,
                                const char **err)
{
	uint8_t proof[SCRAM_KEY_LEN];
	const char *dummy;
	char *buf, *reply = NULL;
	size_t without_proof_len;

	if (!err)
		err = &dummy;
	if (s->step != SCRAM_SERVER_SENT_FIRST) {
		*err = ERR_STATE;
		s->step = SCRAM_SERVER_FAILED;
		return NULL;
	}
	buf = copy_message(msg, len, err);
	if (buf && parse_client_final(s, buf, &without_proof_len, proof, err)) {
		buf[without_proof_len] = '\0';
		reply = verify_client_proof(s, buf, proof, err);
	}
	free(buf);
	OPENSSL_cleanse(proof, sizeof(proof));
	s->step = reply ? SCRAM_SERVER_DONE : SCRAM_SERVER_FAILED;
	return reply;
}

void scram_server_free(struct scram_server *s)
{
	free(s->client_first_bare);
	free(s->server_first);
	free(s->nonce);
	s->client_first_bare = s->server_first = s->nonce = NULL;
	OPENSSL_cleanse(s->client_key, sizeof(s->client_key));
	OPENSSL_cleanse(&s->secret, sizeof(s->secret));
	s->have_client_key = false;
}

/* ---- client side ---- */

bool scram_client_init_password(struct scram_client *c, const char *password)
{
	memset(c, 0, sizeof(*c));
	c->step = SCRAM_CLIENT_INIT;
	c->password = password ? strdup(password) : NULL;
	if (!c->password)
		c->step = SCRAM_CLIENT_FAILED;
	return c->password != NULL;
}

void scram_client_init_keys(struct scram_client *c, const struct scram_secret *secret,
                            const uint8_t client_key[SCRAM_KEY_LEN])
{
	memset(c, 0, sizeof(*c));
	c->step = SCRAM_CLIENT_INIT;
	c->have_keys = true;
	c->secret = *secret;
	memcpy(c->client_key, client_key, SCRAM_KEY_LEN);
	memcpy(c->server_key, secret->server_key, SCRAM_KEY_LEN);
}

void scram_client_set_nonce(struct scram_client *c, const char *nonce)
{
	free(c->client_nonce);
	c->client_nonce = strdup(nonce);
	if (!c->client_nonce)
		c->step = SCRAM_CLIENT_FAILED;
}

bool scram_client_set_user(struct scram_client *c, const char *user)
{
	free(c->user);
	c->user = strdup(user);
	return c->user != NULL;
}

/* RFC 5802 saslname: ',' and '=' would end or confuse the attribute, so escape them. */
static char *escape_saslname(const char *name)
{
	size_t len = 0;
	const char *p;
	char *out, *w;

	for (p = name; *p; p++)
		len += (*p == ',' || *p == '=') ? 3 : 1;
	out = malloc(len + 1);
	if (!out)
		return NULL;
	for (p = name, w = out; *p; p++) {
		if (*p == ',' || *p == '=') {
			memcpy(w, *p == ',' ? "=2C" : "=3D", 3);
			w += 3;
		} else {
			*w++ = *p;
		}
	}
	*w = '\0';
	return out;
}

char *scram_client_first(struct scram_client *c)
{
	char *user = NULL, *msg = NULL;

	if (c->step != SCRAM_CLIENT_INIT)
		return NULL;
	if (!c->client_nonce)
		c->client_nonce = random_nonce();
	if (c->client_nonce)
		user = escape_saslname(c->user ? c->user : "");
	if (user)
		c->client_first_bare = concat("n=", user, ",r=", c->client_nonce, NULL);
	if (c->client_first_bare)
		msg = concat(c->cbind_len ? "p=" SCRAM_CBIND_TYPE ",," : "n,,", c->client_first_bare, NULL);
	free(user);
	c->step = msg ? SCRAM_CLIENT_SENT_FIRST : SCRAM_CLIENT_FAILED;
	return msg;
}

/* Reads nonce, salt and iteration count; the server's salt and count go into *server. */
static bool parse_server_first(const struct scram_client *c, const char *buf, struct attr *nonce,
                               struct scram_secret *server, const char **err)
{
	const char *p = buf;
	size_t cn = strlen(c->client_nonce);
	struct attr a;

	if (!expect_attr(&p, 'r', nonce, err))
		return false;
	if (nonce->len <= cn || memcmp(nonce->value, c->client_nonce, cn) != 0 ||
	    !is_printable(nonce->value, nonce->len)) {
		*err = "invalid SCRAM response (nonce mismatch)";
		return false;
	}
	if (!expect_attr(&p, 's', &a, err))
		return false;
	if (!b64_decode(a.value, a.len, server->salt, sizeof(server->salt), &server->salt_len)) {
		*err = "malformed SCRAM message (invalid salt)";
		return false;
	}
	if (!expect_attr(&p, 'i', &a, err))
		return false;
	if (!parse_iterations(a.value, a.len, &server->iterations)) {
		*err = "malformed SCRAM message (invalid iteration count)";
		return false;
	}
	if (*p != '\0') {
		*err = "malformed SCRAM message (garbage at end of server-first-message)";
		return false;
	}
	return true;
}

/* ClientKey and ServerKey for the server's salt: from the password, or checked against our keys. */
static bool derive_client_keys(struct scram_client *c, const struct scram_secret *server,
                               const char **err)
{
	uint8_t salted[SCRAM_KEY_LEN];
	bool ok;

	if (c->have_keys) {
		/* Recovered keys are bound to the salt and count they were made with. */
		if (server->iterations != c->secret.iterations ||
		    server->salt_len != c->secret.salt_len ||
		    memcmp(server->salt, c->secret.salt, server->salt_len) != 0) {
			*err = ERR_SECRET_MISMATCH;
			return false;
		}
		return true;
	}
	ok = salted_password(c->password, server->salt, server->salt_len, server->iterations,
	                     salted) &&
	     keys_from_salted(salted, c->client_key, c->server_key);
	OPENSSL_cleanse(salted, sizeof(salted));
	if (!ok)
		*err = ERR_CRYPTO;
	return ok;
}

static char *build_client_final(struct scram_client *c, const char *server_first,
                                const struct attr *nonce, const char **err)
{
	uint8_t stored_key[SCRAM_KEY_LEN], proof[SCRAM_KEY_LEN];
	char proof_b64[B64_LEN(SCRAM_KEY_LEN) + 1];
	char *nonce_text, *without_proof = NULL, *reply = NULL;
	size_t i;
	bool ok;

	/* c= is the gs2 header again, followed by the channel binding data */
	char cbind_b64[B64_LEN(sizeof("p=" SCRAM_CBIND_TYPE ",,") + sizeof(c->cbind_data)) + 1] = "biws";
	if (c->cbind_len) {
		uint8_t raw[sizeof("p=" SCRAM_CBIND_TYPE ",,") + sizeof(c->cbind_data)];
		size_t hl = strlen("p=" SCRAM_CBIND_TYPE ",,");
		memcpy(raw, "p=" SCRAM_CBIND_TYPE ",,", hl);
		memcpy(raw + hl, c->cbind_data, c->cbind_len);
		b64_encode(raw, hl + c->cbind_len, cbind_b64);
	}
	nonce_text = strndup(nonce->value, nonce->len);
	if (nonce_text)
		without_proof = concat("c=", cbind_b64, ",r=", nonce_text, NULL);
	if (without_proof)
		c->auth_message = concat(c->client_first_bare, ",", server_first, ",", without_proof,
		                         NULL);
	free(nonce_text);
	if (!c->auth_message) {
		free(without_proof);
		*err = ERR_NOMEM;
		return NULL;
	}
	ok = sha256(c->client_key, SCRAM_KEY_LEN, stored_key) &&
	     hmac_sha256(stored_key, SCRAM_KEY_LEN, c->auth_message, strlen(c->auth_message), proof) &&
	     hmac_sha256(c->server_key, SCRAM_KEY_LEN, c->auth_message, strlen(c->auth_message),
	                 c->server_signature);
	for (i = 0; i < SCRAM_KEY_LEN; i++)
		proof[i] ^= c->client_key[i];
	if (ok) {
		b64_encode(proof, SCRAM_KEY_LEN, proof_b64);
		reply = concat(without_proof, ",p=", proof_b64, NULL);
	}
	if (!reply)
		*err = ok ? ERR_NOMEM : ERR_CRYPTO;
	OPENSSL_cleanse(stored_key, sizeof(stored_key));
	OPENSSL_cleanse(proof, sizeof(proof));
	free(without_proof);
	return reply;
}

bool scram_client_read_server_first(struct scram_client *c, const char *msg, size_t len,
                                    int *iterations, const char **err)
{
	struct attr nonce;
	const char *dummy;
	char *buf;

	if (!err)
		err = &dummy;
	if (c->step != SCRAM_CLIENT_SENT_FIRST) {
		*err = ERR_STATE;
		c->step = SCRAM_CLIENT_FAILED;
		return false;
	}
	memset(&c->server, 0, sizeof(c->server));
	buf = copy_message(msg, len, err);
	if (!buf || !parse_server_first(c, buf, &nonce, &c->server, err)) {
		free(buf);
		c->step = SCRAM_CLIENT_FAILED;
		return false;
	}
	c->server_first = buf;
	c->step = SCRAM_CLIENT_GOT_FIRST;
	if (iterations)
		*iterations = c->server.iterations;
	return true;
}

bool scram_client_needs_salted_password(const struct scram_client *c)
{
	return c->step == SCRAM_CLIENT_GOT_FIRST && !c->have_keys;
}

bool scram_salted_password(const char *password, const uint8_t *salt, size_t salt_len,
                           int iterations, uint8_t out[SCRAM_KEY_LEN])
{
	return salted_password(password, salt, salt_len, iterations, out);
}

char *scram_client_final(struct scram_client *c, const uint8_t salted[SCRAM_KEY_LEN],
                         const char **err)
{
	struct attr nonce;
	const char *dummy;
	char *reply = NULL;
	bool ok;

	if (!err)
		err = &dummy;
	if (c->step != SCRAM_CLIENT_GOT_FIRST || (!c->have_keys && !salted)) {
		*err = ERR_STATE;
		c->step = SCRAM_CLIENT_FAILED;
		return NULL;
	}
	if (c->have_keys) {
		ok = derive_client_keys(c, &c->server, err);
	} else {
		ok = keys_from_salted(salted, c->client_key, c->server_key);
		if (!ok)
			*err = ERR_CRYPTO;
	}
	/* parsed before, so it parses again; only for the nonce's place in the text */
	if (ok && parse_server_first(c, c->server_first, &nonce, &c->server, err))
		reply = build_client_final(c, c->server_first, &nonce, err);
	free(c->server_first);
	c->server_first = NULL;
	c->step = reply ? SCRAM_CLIENT_SENT_FINAL : SCRAM_CLIENT_FAILED;
	return reply;
}

char *scram_client_handle_server_first(struct scram_client *c, const char *msg, size_t len,
                                       const char **err)
{
	uint8_t salted[SCRAM_KEY_LEN];
	const char *dummy;
	char *reply;

	if (!err)
		err = &dummy;
	if (!scram_client_read_server_first(c, msg, len, NULL, err))
		return NULL;
	if (scram_client_needs_salted_password(c) &&
	    !salted_password(c->password, c->server.salt, c->server.salt_len, c->server.iterations,
	                     salted)) {
		*err = ERR_CRYPTO;
		c->step = SCRAM_CLIENT_FAILED;
		return NULL;
	}
	reply = scram_client_final(c, salted, err);
	OPENSSL_cleanse(salted, sizeof(salted));
	return reply;
}

static bool check_server_signature(const struct scram_client *c, const char *buf, const char **err)
{
	uint8_t signature[SCRAM_KEY_LEN];
	const char *p = buf;
	struct attr a;
	size_t n;

	if (p[0] == 'e' && p[1] == '=') {
		*err = "error received from server in SCRAM exchange";
		return false;
	}
	if (!expect_attr(&p, 'v', &a, err))
		return false;
	if (*p != '\0') {
		*err = "malformed SCRAM message (garbage at end of server-final-message)";
		return false;
	}
	if (!b64_decode(a.value, a.len, signature, SCRAM_KEY_LEN, &n) || n != SCRAM_KEY_LEN) {
		*err = "malformed SCRAM message (malformed server signature)";
		return false;
	}
	if (CRYPTO_memcmp(signature, c->server_signature, SCRAM_KEY_LEN) != 0) {
		*err = "incorrect server signature";
		return false;
	}
	return true;
}

bool scram_client_verify_server_final(struct scram_client *c, const char *msg, size_t len,
                                      const char **err)
{
	const char *dummy;
	char *buf;
	bool ok = false;

	if (!err)
		err = &dummy;
	if (c->step != SCRAM_CLIENT_SENT_FINAL) {
		*err = ERR_STATE;
		c->step = SCRAM_CLIENT_FAILED;
		return false;
	}
	buf = copy_message(msg, len, err);
	if (buf)
		ok = check_server_signature(c, buf, err);
	free(buf);
	c->step = ok ? SCRAM_CLIENT_DONE : SCRAM_CLIENT_FAILED;
	return ok;
}

bool scram_client_set_channel_binding(struct scram_client *c, const uint8_t *data, size_t len)
{
	if (len == 0 || len > sizeof(c->cbind_data))
		return false;
	memcpy(c->cbind_data, data, len);
	c->cbind_len = len;
	return true;
}

void scram_client_free(struct scram_client *c)
{
	if (c->password)
		OPENSSL_cleanse(c->password, strlen(c->password));
	free(c->password);
	free(c->client_nonce);
	free(c->client_first_bare);
	free(c->auth_message);
	free(c->user);
	free(c->server_first);
	c->password = c->client_nonce = c->client_first_bare = c->auth_message = c->user = NULL;
	c->server_first = NULL;
	OPENSSL_cleanse(c->client_key, sizeof(c->client_key));
	OPENSSL_cleanse(c->server_key, sizeof(c->server_key));
	OPENSSL_cleanse(&c->secret, sizeof(c->secret));
	c->have_keys = false;
}
