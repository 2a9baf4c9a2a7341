/* SPDX-License-Identifier: PostgreSQL */
/*
 * auth.c - the auth_file (PgBouncer's userlist.txt) and PostgreSQL's MD5
 * password scheme.
 */
#include "auth.h"
#include "scram.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

/* PostgreSQL's MD5_PASSWD_CHARSET: stored hashes are lower-case hex. */
#define MD5_HEX_DIGITS "0123456789abcdef"

/* ---- auth_file ---- */

/* One parsed line; seq orders equal names so that the later line can win. */
struct parsed_entry {
	struct userlist_entry e;
	size_t seq;
};

struct parser {
	const char *name;             /* file name for messages */
	unsigned line;                /* 1-based, of the line being parsed */
	char *errbuf;
	size_t errlen;
	struct parsed_entry *items;   /* in file order until build_list sorts them */
	size_t n_items, cap_items;
};

enum field_result { FIELD_OK, FIELD_UNTERMINATED, FIELD_NOMEM };

static void __attribute__((format(printf, 3, 4)))
set_error(char *errbuf, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!errbuf || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(errbuf, errlen, fmt, ap);
	va_end(ap);
}

/* "name:line: message", the position every auth_file complaint carries. */
static void __attribute__((format(printf, 2, 3)))
parse_error(struct parser *ps, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (!ps->errbuf || ps->errlen == 0)
		return;
	n = snprintf(ps->errbuf, ps->errlen, "%s:%u: ", ps->name, ps->line);
	if (n < 0 || (size_t) n >= ps->errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(ps->errbuf + n, ps->errlen - (size_t) n, fmt, ap);
	va_end(ap);
}

static void free_entry(struct userlist_entry *e)
{
	if (e->password)
		OPENSSL_cleanse(e->password, strlen(e->password));
	free(e->password);
	free(e->name);
	e->name = e->password = NULL;
}

/*
 * The double-quoted field at *pos, with "" turned into ". A field ends on
 * its own line: a newline before the closing quote means it is unterminated,
 * which keeps the reported line number where the mistake is.
 */
static enum field_result read_quoted(const char **pos, char **out)
{
	const char *p = *pos + 1, *q;
	size_t len = 0;
	char *field, *w;

	for (q = p;; q++, len++) {
		if (*q == '\0' || *q == '\n')
			return FIELD_UNTERMINATED;
		if (*q == '"') {
			if (q[1] != '"')
				break;
			q++;
		}
	}
	field = malloc(len + 1);
	if (!field)
		return FIELD_NOMEM;
	for (w = field; p < q; p++) {
		*w++ = *p;
		if (*p == '"')
			p++;
	}
	*w = '\0';
	*out = field;
	*pos = q + 1;
	return FIELD_OK;
}

static bool add_entry(struct parser *ps, char *name, char *password)
{
	struct parsed_entry *item;

	if (ps->n_items == ps->cap_items) {
		size_t cap = ps->cap_items ? ps->cap_items * 2 : 16;
		struct parsed_entry *grown = realloc(ps->items, cap * sizeof(*grown));

		if (!grown)
			return false;
		ps->items = grown;
		ps->cap_items = cap;
	}
	item = &ps->items[ps->n_items];
	item->e.name = name;
	item->e.password = password;
	item->e.kind = password_kind_of(password);
	item->seq = ps->n_items++;
	return true;
}

/* One line: an entry, a comment or blank. False after reporting an error. */
static bool parse_line(struct parser *ps, const char *p)
{
	char *name = NULL, *password = NULL;
	enum field_result r;

	p += strspn(p, " \t\r\f\v");
	if (*p == '\0' || *p == '\n' || *p == ';' || *p == '#')
		return true;
	if (*p != '"') {
		parse_error(ps, "missing opening quote before user name");
		return false;
	}
	r = read_quoted(&p, &name);
	if (r != FIELD_OK) {
		parse_error(ps, r == FIELD_NOMEM ? "out of memory" : "missing closing quote in user name");
		return false;
	}
	if (name[0] == '\0') {
		parse_error(ps, "empty user name");
		free(name);
		return false;
	}
	p += strspn(p, " \t");
	if (*p != '"') {
		parse_error(ps, "missing password for user \"%s\"", name);
		free(name);
		return false;
	}
	r = read_quoted(&p, &password);
	if (r != FIELD_OK) {
		parse_error(ps, r == FIELD_NOMEM ? "out of memory" : "missing closing quote in password");
		free(name);
		return false;
	}
	/* Whatever follows the password is ignored, as PgBouncer does. */
	if (!add_entry(ps, name, password)) {
		parse_error(ps, "out of memory");
		free(name);
		free(password);
		return false;
	}
	return true;
}

static int compare_parsed(const void *a, const void *b)
{
	const struct parsed_entry *x = a, *y = b;
	int c = strcmp(x->e.name, y->e.name);

	if (c != 0)
		return c;
	return (x->seq > y->seq) - (x->seq < y->seq);
}

/* Sorted, one entry per name: of duplicates the last line wins, like a later assignment. */
static struct userlist *build_list(struct parser *ps)
{
	struct userlist *list = calloc(1, sizeof(*list));
	size_t i;

	if (!list)
		return NULL;
	if (ps->n_items > 0) {
		list->entries = malloc(ps->n_items * sizeof(*list->entries));
		if (!list->entries) {
			free(list);
			return NULL;
		}
	}
	if (ps->n_items > 1)
		qsort(ps->items, ps->n_items, sizeof(*ps->items), compare_parsed);
	for (i = 0; i < ps->n_items; i++) {
		struct userlist_entry *e = &ps->items[i].e;

		if (i + 1 < ps->n_items && strcmp(e->name, ps->items[i + 1].e.name) == 0)
			free_entry(e);
		else
			list->entries[list->n_entries++] = *e;
	}
	free(ps->items);
	ps->items = NULL;
	ps->n_items = ps->cap_items = 0;
	return list;
}

struct userlist *userlist_parse(const char *text, const char *name, char *errbuf, size_t errlen)
{
	struct parser ps = { .name = name ? name : "auth_file", .errbuf = errbuf, .errlen = errlen };
	struct userlist *list = NULL;
	const char *p = text;
	size_t i;

	set_error(errbuf, errlen, "%s", "");
	while (p && *p != '\0') {
		ps.line++;
		if (!parse_line(&ps, p))
			goto fail;
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	list = build_list(&ps);
	if (list)
		return list;
	set_error(errbuf, errlen, "%s: out of memory", ps.name);
fail:
	for (i = 0; i < ps.n_items; i++)
		free_entry(&ps.items[i].e);
	free(ps.items);
	return NULL;
}

/*
 * The whole file as a string. Grows by hand instead of realloc so that no
 * stale copy of the passwords stays behind in freed memory.
 */
static char *read_file(FILE *f, size_t *len_out)
{
	size_t cap = 4096, len = 0, n;
	char *buf = malloc(cap), *grown;

	errno = 0;
	while (buf && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
		len += n;
		if (cap - len - 1 > 0)
			continue;
		grown = malloc(cap * 2);
		if (grown)
			memcpy(grown, buf, len);
		OPENSSL_cleanse(buf, cap);
		free(buf);
		buf = grown;
		cap *= 2;
	}
	if (!buf) {
		errno = ENOMEM;
	} else if (ferror(f)) {
		int read_errno = errno ? errno : EIO;

		OPENSSL_cleanse(buf, cap);
		free(buf);
		buf = NULL;
		errno = read_errno;
	} else {
		buf[len] = '\0';
		*len_out = len;
	}
	return buf;
}

struct userlist *userlist_load(const char *path, char *errbuf, size_t errlen)
{
	struct userlist *list = NULL;
	size_t len = 0, nul, line;
	FILE *f;
	char *text;

	f = fopen(path, "r");
	if (!f) {
		set_error(errbuf, errlen, "could not open file \"%s\": %s", path, strerror(errno));
		return NULL;
	}
	text = read_file(f, &len);
	if (!text)
		set_error(errbuf, errlen, "could not read file \"%s\": %s", path, strerror(errno));
	fclose(f);
	if (!text)
		return NULL;
	nul = strlen(text);
	if (nul != len) {
		for (line = 1; nul-- > 0;)
			line += text[nul] == '\n';
		set_error(errbuf, errlen, "%s:%zu: unexpected NUL byte", path, line);
	} else {
		list = userlist_parse(text, path, errbuf, errlen);
	}
	OPENSSL_cleanse(text, len);
	free(text);
	return list;
}

void userlist_free(struct userlist *list)
{
	size_t i;

	if (!list)
		return;
	for (i = 0; i < list->n_entries; i++)
		free_entry(&list->entries[i]);
	free(list->entries);
	free(list);
}

static int compare_name(const void *key, const void *elem)
{
	const struct userlist_entry *e = elem;

	return strcmp(key, e->name);
}

const struct userlist_entry *userlist_find(const struct userlist *list, const char *user)
{
	if (!list || !user || list->n_entries == 0)
		return NULL;
	return bsearch(user, list->entries, list->n_entries, sizeof(*list->entries), compare_name);
}

/* ---- passwords ---- */

enum password_kind password_kind_of(const char *password)
{
	struct scram_secret secret;
	bool scram;

	if (!password)
		return PASSWORD_PLAIN;
	if (strncmp(password, "md5", 3) == 0 && strlen(password) == MD5_PASSWD_LEN &&
	    strspn(password + 3, MD5_HEX_DIGITS) == MD5_PASSWD_LEN - 3)
		return PASSWORD_MD5;
	if (strncmp(password, "SCRAM-SHA-256$", 14) != 0)
		return PASSWORD_PLAIN;
	scram = scram_parse_secret(password, &secret);
	OPENSSL_cleanse(&secret, sizeof(secret));
	return scram ? PASSWORD_SCRAM : PASSWORD_PLAIN;
}

/* "md5" || hex(md5(a || b)); out is "" when OpenSSL cannot (MD5 is absent under FIPS). */
static void md5_hex(const void *a, size_t a_len, const void *b, size_t b_len,
                    char out[MD5_PASSWD_LEN + 1])
{
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int digest_len = 0, i;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	bool ok;

	ok = ctx && EVP_DigestInit_ex(ctx, EVP_md5(), NULL) == 1 &&
	     EVP_DigestUpdate(ctx, a, a_len) == 1 && EVP_DigestUpdate(ctx, b, b_len) == 1 &&
	     EVP_DigestFinal_ex(ctx, digest, &digest_len) == 1 && digest_len == 16;
	EVP_MD_CTX_free(ctx);
	out[0] = '\0';
	if (!ok)
		return;
	memcpy(out, "md5", 3);
	for (i = 0; i < 16; i++) {
		out[3 + 2 * i] = MD5_HEX_DIGITS[digest[i] >> 4];
		out[4 + 2 * i] = MD5_HEX_DIGITS[digest[i] & 0xf];
	}
	out[MD5_PASSWD_LEN] = '\0';
}

void md5_password_hash(const char *password, const char *user, char out[MD5_PASSWD_LEN + 1])
{
	md5_hex(password, strlen(password), user, strlen(user), out);
}

void md5_salted_response(const char *stored_md5, const uint8_t salt[4],
                         char out[MD5_PASSWD_LEN + 1])
{
	if (password_kind_of(stored_md5) != PASSWORD_MD5) {
		out[0] = '\0';
		return;
	}
	md5_hex(stored_md5 + 3, MD5_PASSWD_LEN - 3, salt, 4, out);
}

bool md5_check_response(const char *stored, const char *user, const uint8_t salt[4],
                        const char *response)
{
	char hashed[MD5_PASSWD_LEN + 1], expected[MD5_PASSWD_LEN + 1];
	bool ok;

	if (!stored || !user || !salt || !response)
		return false;
	switch (password_kind_of(stored)) {
	case PASSWORD_SCRAM:
		return false;
	case PASSWORD_MD5:
		memcpy(hashed, stored, MD5_PASSWD_LEN + 1);
		break;
	case PASSWORD_PLAIN:
	default:
		md5_password_hash(stored, user, hashed);
		break;
	}
	md5_salted_response(hashed, salt, expected);
	/* An empty expected value means hashing failed; it must never match an empty response. */
	ok = expected[0] != '\0' && secure_streq(expected, response);
	OPENSSL_cleanse(hashed, sizeof(hashed));
	OPENSSL_cleanse(expected, sizeof(expected));
	return ok;
}

bool secure_streq(const char *a, const char *b)
{
	size_t len;

	if (!a || !b)
		return false;
	len = strlen(a);
	if (len != strlen(b))
		return false;
	return CRYPTO_memcmp(a, b, len) == 0;
}
