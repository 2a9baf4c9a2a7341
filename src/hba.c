/* SPDX-License-Identifier: PostgreSQL */
/*
 * hba.c - auth_hba_file: PostgreSQL's pg_hba.conf format, split into fields
 * the way PostgreSQL does (quotes, comma lists, backslash continuation,
 * @file lists), checked line by line, and the first-match lookup.
 */
#include "hba.h"
#include "ldapauth.h"
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* @file lists may name further @files; PostgreSQL stops at the same depth. */
#define HBA_MAX_INCLUDE_DEPTH 10

/* ---- the parsed rules ---- */

enum name_kind {
	NAME_LITERAL,      /* this exact name */
	NAME_ALL,          /* "all" */
	NAME_SAMEUSER,     /* "sameuser": the database named like the user */
	NAME_REPLICATION,  /* "replication": kept so the line loads, matches nothing */
};

struct hba_name {
	enum name_kind kind;
	char *literal;     /* NAME_LITERAL only; owned */
};

struct name_list {
	struct hba_name *names;
	size_t n, cap;
};

enum addr_kind { ADDR_NONE, ADDR_ALL, ADDR_SAMEHOST, ADDR_SAMENET, ADDR_MASK };

struct hba_rule {
	int line;                  /* first line of the record in auth_hba_file */
	enum hba_conn_type type;
	struct name_list databases;
	struct name_list users;
	enum addr_kind addr_kind;  /* ADDR_NONE for local rules */
	int family;                /* ADDR_MASK: AF_INET or AF_INET6 */
	uint8_t net[16];           /* ADDR_MASK: address & mask, network order (4 bytes for IPv4) */
	uint8_t mask[16];
	enum hba_method method;
	char *map;                 /* map= option (auth_ident_file), owned; NULL: none */
	struct ldap_params *ldap;  /* ldap lines: their ldap...= options, owned; else NULL */
};

struct hba {
	struct hba_rule *rules;    /* file order: the first match wins */
	size_t n_rules, cap_rules;
};

/* ---- one logical line, split into fields ---- */

struct token {
	char *text;            /* quotes removed, "" inside quotes turned into "; owned */
	bool quoted;           /* some of it was quoted: never a keyword */
	bool initial_quote;    /* it began with a quote: a leading '@' or '+' is literal */
};

/* One whitespace-separated column; a comma list gives several tokens. */
struct field {
	struct token *tokens;
	size_t n, cap;
	bool leading_comma;    /* began with a comma (",name=value"): taken only among the options */
};

struct record {
	struct field *fields;
	size_t n, cap;
};

/* Physical lines joined where one ends in a backslash (PostgreSQL 16+). */
struct line_reader {
	const char *pos;       /* start of the next physical line; NULL at the end */
	int next_line;         /* its 1-based number */
	char *buf;             /* the joined record; owned */
	size_t len, cap;
};

/* Where text comes from: for messages and for resolving relative @file names. */
struct source {
	const char *name;
	int depth;             /* 0 for auth_hba_file, 1 for an @file it names, ... */
};

struct parser {
	char *errbuf;
	size_t errlen;
};

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

/* "name:line: message", the form of every complaint about a line. Returns false. */
static bool __attribute__((format(printf, 4, 5)))
line_error(struct parser *ps, const struct source *src, int line, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (!ps->errbuf || ps->errlen == 0)
		return false;
	n = snprintf(ps->errbuf, ps->errlen, "%s:%d: ", src->name, line);
	if (n < 0 || (size_t) n >= ps->errlen)
		return false;
	va_start(ap, fmt);
	vsnprintf(ps->errbuf + n, ps->errlen - (size_t) n, fmt, ap);
	va_end(ap);
	return false;
}

static bool grow(void **items, size_t *cap, size_t n, size_t size)
{
	size_t new_cap;
	void *grown;

	if (n < *cap)
		return true;
	new_cap = *cap ? *cap * 2 : 8;
	grown = realloc(*items, new_cap * size);
	if (!grown)
		return false;
	*items = grown;
	*cap = new_cap;
	return true;
}

static void record_clear(struct record *rec)
{
	size_t i, j;

	for (i = 0; i < rec->n; i++) {
		for (j = 0; j < rec->fields[i].n; j++)
			free(rec->fields[i].tokens[j].text);
		free(rec->fields[i].tokens);
	}
	free(rec->fields);
	memset(rec, 0, sizeof(*rec));
}

/*
 * The next record into lr->buf. Returns 1, 0 at the end of the text, -1 when
 * out of memory. *line is the record's first physical line. A backslash as
 * the last character joins the next line, even inside quotes or a comment,
 * as PostgreSQL documents; the backslash itself is dropped, nothing is added.
 */
static int read_record(struct line_reader *lr, int *line)
{
	bool more;

	if (!lr->pos || *lr->pos == '\0')
		return 0;
	lr->len = 0;
	*line = lr->next_line;
	do {
		const char *eol = strchr(lr->pos, '\n');
		size_t n = eol ? (size_t) (eol - lr->pos) : strlen(lr->pos);

		while (n > 0 && lr->pos[n - 1] == '\r')
			n--;
		more = n > 0 && lr->pos[n - 1] == '\\';
		if (more)
			n--;
		if (lr->len + n + 1 > lr->cap) {
			size_t cap = (lr->len + n + 1) * 2;
			char *grown = realloc(lr->buf, cap);

			if (!grown)
				return -1;
			lr->buf = grown;
			lr->cap = cap;
		}
		memcpy(lr->buf + lr->len, lr->pos, n);
		lr->len += n;
		lr->buf[lr->len] = '\0';
		lr->next_line++;
		lr->pos = eol ? eol + 1 : NULL;
	} while (more && lr->pos && *lr->pos != '\0');
	return 1;
}

static bool is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

/*
 * Split one record into fields and comma-separated tokens. Blanks separate
 * fields; '#' outside quotes starts a comment; a comma continues the field,
 * also when blanks follow it. Returns NULL, or the (static) reason the
 * record cannot be split.
 */
static const char *tokenize(const char *p, struct record *rec)
{
	char *scratch = malloc(strlen(p) + 1);
	const char *why = NULL;

	if (!scratch)
		return "out of memory";
	for (;;) {
		struct field *f;

		while (is_blank(*p))
			p++;
		if (*p == '\0' || *p == '#')
			break;
		if (!grow((void **) &rec->fields, &rec->cap, rec->n, sizeof(*rec->fields))) {
			why = "out of memory";
			break;
		}
		f = &rec->fields[rec->n++];
		memset(f, 0, sizeof(*f));
		for (;;) {
			struct token t = { .initial_quote = *p == '"' };
			bool in_quote = false;
			size_t w = 0;

			while (*p != '\0') {
				if (in_quote) {
					if (*p == '"' && p[1] == '"') {
						scratch[w++] = '"';
						p += 2;
					} else if (*p == '"') {
						in_quote = false;
						p++;
					} else {
						scratch[w++] = *p++;
					}
					continue;
				}
				if (is_blank(*p) || *p == ',' || *p == '#')
					break;
				if (*p == '"') {
					in_quote = t.quoted = true;
					p++;
					continue;
				}
				scratch[w++] = *p++;
			}
			if (in_quote) {
				why = "unterminated quoted string";
				goto out;
			}
			if (w == 0 && !t.quoted && f->n == 0 && !f->leading_comma && *p == ',') {
				/* PgBouncer reads "a=b ,c=d" among the options; parse_rule refuses it elsewhere */
				f->leading_comma = true;
				p++;
				while (is_blank(*p))
					p++;
				continue;
			}
			if (w == 0 && !t.quoted) {
				why = "empty entry in a comma-separated list";
				goto out;
			}
			scratch[w] = '\0';
			t.text = strdup(scratch);
			if (!t.text || !grow((void **) &f->tokens, &f->cap, f->n, sizeof(*f->tokens))) {
				free(t.text);
				why = "out of memory";
				goto out;
			}
			f->tokens[f->n++] = t;
			if (*p != ',')
				break;
			p++;
			while (is_blank(*p))
				p++;
		}
	}
out:
	free(scratch);
	return why;
}

/* ---- files ---- */

/*
 * The whole file as a NUL-terminated string (caller frees), or NULL with why
 * set to "could not open file ...", "could not read file ...",
 * "out of memory" or "path:line: unexpected NUL byte".
 */
static char *read_text(const char *path, char *why, size_t why_len)
{
	size_t cap = 4096, len = 0, n, line = 1, i;
	char *buf, *grown;
	FILE *f = fopen(path, "r");

	if (!f) {
		set_error(why, why_len, "could not open file \"%s\": %s", path, strerror(errno));
		return NULL;
	}
	errno = 0;
	buf = malloc(cap);
	while (buf && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
		len += n;
		if (len + 1 < cap)
			continue;
		grown = realloc(buf, cap * 2);
		if (!grown)
			free(buf);
		buf = grown;
		cap *= 2;
	}
	if (!buf) {
		set_error(why, why_len, "%s: out of memory", path);
	} else if (ferror(f)) {
		set_error(why, why_len, "could not read file \"%s\": %s", path, strerror(errno ? errno : EIO));
		free(buf);
		buf = NULL;
	} else {
		buf[len] = '\0';
		if (strlen(buf) != len) {
			for (i = 0; buf[i] != '\0'; i++)
				line += buf[i] == '\n';
			set_error(why, why_len, "%s:%zu: unexpected NUL byte", path, line);
			free(buf);
			buf = NULL;
		}
	}
	fclose(f);
	return buf;
}

/* name relative to the directory of from (absolute names stay); caller frees. */
static char *resolve_path(const char *from, const char *name)
{
	const char *slash = strrchr(from, '/');
	size_t dir_len = slash ? (size_t) (slash - from) + 1 : 0;
	char *path;

	if (name[0] == '/')
		dir_len = 0;
	path = malloc(dir_len + strlen(name) + 1);
	if (!path)
		return NULL;
	memcpy(path, from, dir_len);
	strcpy(path + dir_len, name);
	return path;
}

/* ---- DATABASE and USER columns ---- */

static bool add_name(struct name_list *list, enum name_kind kind, const char *literal)
{
	struct hba_name *name;

	if (!grow((void **) &list->names, &list->cap, list->n, sizeof(*list->names)))
		return false;
	name = &list->names[list->n];
	name->kind = kind;
	name->literal = NULL;
	if (kind == NAME_LITERAL && !(name->literal = strdup(literal)))
		return false;
	list->n++;
	return true;
}

static void name_list_free(struct name_list *list)
{
	size_t i;

	for (i = 0; i < list->n; i++)
		free(list->names[i].literal);
	free(list->names);
	memset(list, 0, sizeof(*list));
}

static bool add_names_from_file(struct parser *ps, const struct source *src, int line,
                                const char *file, bool is_db, struct name_list *out);

/* One token of a DATABASE (is_db) or USER column into out. */
static bool add_name_token(struct parser *ps, const struct source *src, int line,
                           const struct token *t, bool is_db, struct name_list *out)
{
	const char *s = t->text;
	enum name_kind kind = NAME_LITERAL;

	if (s[0] == '@' && !t->initial_quote) {
		if (s[1] == '\0')
			return line_error(ps, src, line, "missing file name after \"@\"");
		return add_names_from_file(ps, src, line, s + 1, is_db, out);
	}
	if (!t->quoted && s[0] == '/')
		return line_error(ps, src, line,
		                  "regular expression \"%s\" is not supported by pgsluice; list the names", s);
	if (!t->quoted && strcmp(s, "all") == 0) {
		kind = NAME_ALL;
	} else if (is_db && !t->quoted && strcmp(s, "sameuser") == 0) {
		kind = NAME_SAMEUSER;
	} else if (is_db && !t->quoted && strcmp(s, "replication") == 0) {
		kind = NAME_REPLICATION;
	} else if (is_db && !t->quoted && (strcmp(s, "samerole") == 0 || strcmp(s, "samegroup") == 0)) {
		return line_error(ps, src, line,
		                  "database keyword \"%s\" is not supported by pgsluice "
		                  "(role membership is known only to the server); list the databases", s);
	} else if (!is_db && !t->quoted && s[0] == '+') {
		return line_error(ps, src, line,
		                  "group membership \"%s\" is not supported by pgsluice "
		                  "(role membership is known only to the server); list the users or use an @file", s);
	}
	if (!add_name(out, kind, s))
		return line_error(ps, src, line, "out of memory");
	return true;
}

/*
 * "@file": every token of every record of the file (blanks or commas between
 * names, '#' comments, quotes, nested @file) added as if written in place.
 */
static bool add_names_from_file(struct parser *ps, const struct source *src, int line,
                                const char *file, bool is_db, struct name_list *out)
{
	struct source inc = { .depth = src->depth + 1 };
	struct line_reader lr = { .next_line = 1 };
	struct record rec = { 0 };
	char why_buf[512];
	char *path, *text;
	const char *why;
	bool ok = true;
	int r, inc_line = 0;
	size_t i, j;

	if (inc.depth > HBA_MAX_INCLUDE_DEPTH)
		return line_error(ps, src, line, "could not open file \"%s\": @file lists nested more than %d deep",
		                  file, HBA_MAX_INCLUDE_DEPTH);
	path = resolve_path(src->name, file);
	if (!path)
		return line_error(ps, src, line, "out of memory");
	/* Open errors are reported at the line that names the file. */
	text = read_text(path, why_buf, sizeof(why_buf));
	if (!text) {
		free(path);
		return line_error(ps, src, line, "%s", why_buf);
	}
	inc.name = path;
	lr.pos = text;
	while (ok && (r = read_record(&lr, &inc_line)) != 0) {
		if (r < 0) {
			ok = line_error(ps, &inc, inc_line, "out of memory");
			break;
		}
		why = tokenize(lr.buf, &rec);
		if (why)
			ok = line_error(ps, &inc, inc_line, "%s", why);
		for (i = 0; ok && i < rec.n; i++)
			for (j = 0; ok && j < rec.fields[i].n; j++)
				ok = add_name_token(ps, &inc, inc_line, &rec.fields[i].tokens[j], is_db, out);
		record_clear(&rec);
	}
	free(lr.buf);
	free(text);
	free(path);
	return ok;
}

/* ---- ADDRESS column ---- */

static void mask_from_bits(uint8_t mask[16], unsigned bits)
{
	unsigned i;

	memset(mask, 0, 16);
	for (i = 0; i < 16 && bits >= 8; i++, bits -= 8)
		mask[i] = 0xff;
	if (i < 16 && bits > 0)
		mask[i] = (uint8_t) (0xff << (8 - bits));
}

/* AF_INET or AF_INET6 with the address in out, or 0 when s is not a numeric address. */
static int parse_ip(const char *s, uint8_t out[16])
{
	memset(out, 0, 16);
	if (inet_pton(AF_INET, s, out) == 1)
		return AF_INET;
	if (inet_pton(AF_INET6, s, out) == 1)
		return AF_INET6;
	return 0;
}

/* Something that was meant as an IP address rather than a host name. */
static bool looks_numeric(const char *s)
{
	return strchr(s, ':') || strspn(s, "0123456789.") == strlen(s);
}

/*
 * The ADDRESS column at rec->fields[*fi], and the MASK column after it when
 * the address is written without "/len". Advances *fi past what it used.
 */
static bool parse_address(struct parser *ps, const struct source *src, int line,
                          const struct record *rec, size_t *fi, struct hba_rule *rule)
{
	const struct field *f = &rec->fields[*fi];
	const struct token *t = &f->tokens[0];
	const char *s = t->text, *slash;
	unsigned addr_len, bits = 0, i;
	char addr[INET6_ADDRSTRLEN + 1];
	uint8_t mask[16];
	int mask_family;

	if (f->n > 1)
		return line_error(ps, src, line, "multiple values specified for host address");
	(*fi)++;
	if (!t->quoted && strcmp(s, "all") == 0) {
		rule->addr_kind = ADDR_ALL;
		return true;
	}
	if (!t->quoted && strcmp(s, "samehost") == 0) {
		rule->addr_kind = ADDR_SAMEHOST;
		return true;
	}
	if (!t->quoted && strcmp(s, "samenet") == 0) {
		rule->addr_kind = ADDR_SAMENET;
		return true;
	}
	rule->addr_kind = ADDR_MASK;
	slash = strchr(s, '/');
	if (slash) {
		const char *len_text = slash + 1;
		size_t digits = strspn(len_text, "0123456789");

		if ((size_t) (slash - s) >= sizeof(addr))
			return line_error(ps, src, line, "invalid IP address \"%s\"", s);
		memcpy(addr, s, (size_t) (slash - s));
		addr[slash - s] = '\0';
		rule->family = parse_ip(addr, rule->net);
		if (!rule->family)
			return line_error(ps, src, line, "invalid IP address \"%s\"", addr);
		addr_len = rule->family == AF_INET ? 32 : 128;
		for (i = 0; i < digits && bits <= addr_len; i++)
			bits = bits * 10 + (unsigned) (len_text[i] - '0');
		if (digits == 0 || digits != strlen(len_text) || bits > addr_len)
			return line_error(ps, src, line, "invalid CIDR mask in address \"%s\" (0 to %u for IPv%d)",
			                  s, addr_len, rule->family == AF_INET ? 4 : 6);
		mask_from_bits(rule->mask, bits);
	} else {
		rule->family = parse_ip(s, rule->net);
		if (!rule->family && looks_numeric(s))
			return line_error(ps, src, line, "invalid IP address \"%s\"", s);
		if (!rule->family)
			return line_error(ps, src, line,
			                  "host name \"%s\" in the address column is not supported by pgsluice "
			                  "(no DNS lookups at login); write an IP address range such as 10.0.0.0/8", s);
		if (*fi >= rec->n)
			return line_error(ps, src, line, "end-of-line before netmask specification");
		f = &rec->fields[*fi];
		if (f->n > 1)
			return line_error(ps, src, line, "multiple values specified for netmask");
		mask_family = parse_ip(f->tokens[0].text, mask);
		if (!mask_family)
			return line_error(ps, src, line,
			                  "invalid IP mask \"%s\"; write \"%s/len\" or give the mask in the next column",
			                  f->tokens[0].text, s);
		if (mask_family != rule->family)
			return line_error(ps, src, line, "IP address and mask do not match: \"%s\" \"%s\"",
			                  s, f->tokens[0].text);
		memcpy(rule->mask, mask, sizeof(mask));
		(*fi)++;
	}
	for (i = 0; i < 16; i++)
		rule->net[i] &= rule->mask[i];
	return true;
}

/* ---- METHOD column and options ---- */

static const struct {
	const char *name;
	enum hba_method method;
} methods[] = {
	{ "trust", HBA_TRUST },
	{ "reject", HBA_REJECT },
	{ "md5", HBA_MD5 },
	{ "scram-sha-256", HBA_SCRAM_SHA_256 },
	{ "password", HBA_PASSWORD },
	{ "cert", HBA_CERT },
	{ "peer", HBA_PEER },
	{ "ident", HBA_IDENT },
	{ "ldap", HBA_LDAP },
	{ "pam", HBA_PAM },
};

/* PostgreSQL's other methods: named as unsupported rather than unknown. */
static const char *const postgresql_only_methods[] = {
	"gss", "sspi", "radius", "bsd", "oauth", "krb5", "crypt", NULL
};

static bool parse_method(struct parser *ps, const struct source *src, int line,
                         const struct field *f, struct hba_rule *rule)
{
	const char *s = f->tokens[0].text;
	size_t i;

	if (f->n > 1)
		return line_error(ps, src, line, "multiple values specified for authentication type");
	for (i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
		if (strcmp(s, methods[i].name) == 0) {
			rule->method = methods[i].method;
			if (rule->method == HBA_CERT && rule->type != HBA_HOSTSSL)
				return line_error(ps, src, line, "cert authentication is only supported on hostssl connections");
			if (rule->method == HBA_PEER && rule->type != HBA_LOCAL)
				return line_error(ps, src, line, "peer authentication is only supported on local sockets");
			if (rule->method == HBA_IDENT && rule->type == HBA_LOCAL)
				rule->method = HBA_PEER;   /* PostgreSQL: ident over a local socket is peer */
			return true;
		}
	}
	for (i = 0; postgresql_only_methods[i]; i++)
		if (strcmp(s, postgresql_only_methods[i]) == 0)
			return line_error(ps, src, line, "authentication method \"%s\" is not supported by pgsluice", s);
	return line_error(ps, src, line, "invalid authentication method \"%s\"", s);
}

/*
 * name=value options after the method. pgsluice needs none; those that
 * restate what it does anyway are accepted, every other one is refused so
 * that a rule never silently means less than it says.
 */
static bool parse_option(struct parser *ps, const struct source *src, int line,
                         const char *opt, struct hba_rule *rule)
{
	const char *eq = strchr(opt, '=');
	size_t name_len = eq ? (size_t) (eq - opt) : 0;
	const char *value = eq ? eq + 1 : "";

	if (!eq || name_len == 0)
		return line_error(ps, src, line, "authentication option not in name=value format: %s", opt);
	if (name_len == 10 && strncmp(opt, "clientcert", 10) == 0) {
		if (rule->type != HBA_HOSTSSL)
			return line_error(ps, src, line, "clientcert can only be configured for \"hostssl\" rows");
		if (strcmp(value, "verify-full") != 0 && strcmp(value, "verify-ca") != 0)
			return line_error(ps, src, line, "invalid value for clientcert: \"%s\"", value);
		if (rule->method == HBA_CERT && strcmp(value, "verify-full") == 0)
			return true;   /* what cert does anyway */
		if (rule->method == HBA_CERT)
			return line_error(ps, src, line, "clientcert only accepts \"verify-full\" when using \"cert\" authentication");
		return line_error(ps, src, line,
		                  "option \"clientcert\" is not supported by pgsluice with method \"%s\"; use method \"cert\"",
		                  hba_method_name(rule->method));
	}
	if (name_len == 10 && strncmp(opt, "clientname", 10) == 0) {
		if (rule->method != HBA_CERT)
			return line_error(ps, src, line, "clientname can only be configured with method \"cert\"");
		if (strcmp(value, "CN") == 0)
			return true;   /* the user name is the certificate's CN, as pgsluice does */
		if (strcmp(value, "DN") == 0)
			return line_error(ps, src, line, "clientname=DN is not supported by pgsluice; the user name is the certificate's CN");
		return line_error(ps, src, line, "invalid value for clientname: \"%s\"", value);
	}
	if (name_len == 3 && strncmp(opt, "map", 3) == 0) {
		if (rule->method != HBA_PEER && rule->method != HBA_IDENT && rule->method != HBA_CERT)
			return line_error(ps, src, line, "authentication option \"map\" is only valid for authentication methods ident, peer, gssapi, sspi, and cert");
		if (!value[0])
			return line_error(ps, src, line, "map= needs the name of a map in auth_ident_file");
		free(rule->map);
		rule->map = strdup(value);
		if (!rule->map)
			return line_error(ps, src, line, "out of memory");
		return true;
	}
	if (rule->method == HBA_LDAP && name_len > 4 && strncmp(opt, "ldap", 4) == 0) {
		char why[256];
		if (!rule->ldap) {
			if (!(rule->ldap = malloc(sizeof(*rule->ldap))))
				return line_error(ps, src, line, "out of memory");
			ldapauth_init(rule->ldap);
		}
		if (!ldapauth_set(rule->ldap, opt, name_len, value, why, sizeof(why)))
			return line_error(ps, src, line, "%s", why);
		return true;
	}
	/* PAM's options: the service is PgBouncer's "pgbouncer" (pamauth.h), the address is PAM_RHOST */
	if (rule->method == HBA_PAM && ((name_len == 10 && strncmp(opt, "pamservice", 10) == 0) ||
	                                (name_len == 16 && strncmp(opt, "pam_use_hostname", 16) == 0)))
		return true;
	return line_error(ps, src, line, "unrecognized authentication option name: \"%.*s\"", (int) name_len, opt);
}

/* ---- one rule ---- */

static void rule_free(struct hba_rule *rule)
{
	if (rule->ldap) {
		ldapauth_clear(rule->ldap);
		free(rule->ldap);
	}
	free(rule->map);
	name_list_free(&rule->databases);
	name_list_free(&rule->users);
}

static bool parse_type(struct parser *ps, const struct source *src, int line,
                       const struct field *f, struct hba_rule *rule)
{
	const char *s = f->tokens[0].text;

	if (f->n > 1)
		return line_error(ps, src, line, "multiple values specified for connection type");
	if (strcmp(s, "local") == 0)
		rule->type = HBA_LOCAL;
	else if (strcmp(s, "host") == 0)
		rule->type = HBA_HOST;
	else if (strcmp(s, "hostssl") == 0)
		rule->type = HBA_HOSTSSL;
	else if (strcmp(s, "hostnossl") == 0)
		rule->type = HBA_HOSTNOSSL;
	else if (strcmp(s, "hostgssenc") == 0 || strcmp(s, "hostnogssenc") == 0)
		return line_error(ps, src, line, "connection type \"%s\" is not supported by pgsluice (no GSSAPI)", s);
	else if (strcmp(s, "include") == 0 || strcmp(s, "include_if_exists") == 0 ||
	         strcmp(s, "include_dir") == 0)
		return line_error(ps, src, line, "\"%s\" is not supported by pgsluice; write the rules in this file", s);
	else
		return line_error(ps, src, line, "invalid connection type \"%s\"", s);
	return true;
}

/* A split, non-empty record into rule (which the caller frees either way). */
static bool parse_rule(struct parser *ps, const struct source *src, int line,
                       const struct record *rec, struct hba_rule *rule)
{
	size_t fi = 1, i;

	rule->line = line;
	if (!parse_type(ps, src, line, &rec->fields[0], rule))
		return false;
	if (fi >= rec->n)
		return line_error(ps, src, line, "end-of-line before database specification");
	for (i = 0; i < rec->fields[fi].n; i++)
		if (!add_name_token(ps, src, line, &rec->fields[fi].tokens[i], true, &rule->databases))
			return false;
	if (++fi >= rec->n)
		return line_error(ps, src, line, "end-of-line before role specification");
	for (i = 0; i < rec->fields[fi].n; i++)
		if (!add_name_token(ps, src, line, &rec->fields[fi].tokens[i], false, &rule->users))
			return false;
	fi++;
	if (rule->type != HBA_LOCAL) {
		if (fi >= rec->n)
			return line_error(ps, src, line, "end-of-line before IP address specification");
		if (!parse_address(ps, src, line, rec, &fi, rule))
			return false;
	}
	if (fi >= rec->n)
		return line_error(ps, src, line, "end-of-line before authentication method");
	for (size_t k = 0; k < fi + 1 && k < rec->n; k++)
		if (rec->fields[k].leading_comma)
			return line_error(ps, src, line, "empty entry in a comma-separated list");
	if (!parse_method(ps, src, line, &rec->fields[fi++], rule))
		return false;
	for (; fi < rec->n; fi++)
		for (i = 0; i < rec->fields[fi].n; i++)
			if (!parse_option(ps, src, line, rec->fields[fi].tokens[i].text, rule))
				return false;
	if (rule->method == HBA_LDAP) {
		char why[256];
		struct ldap_params none;
		ldapauth_init(&none);
		if (!ldapauth_check_params(rule->ldap ? rule->ldap : &none, why, sizeof(why)))
			return line_error(ps, src, line, "%s", why);
	}
	return true;
}

/* ---- loading ---- */

void hba_free(struct hba *hba)
{
	size_t i;

	if (!hba)
		return;
	for (i = 0; i < hba->n_rules; i++)
		rule_free(&hba->rules[i]);
	free(hba->rules);
	free(hba);
}

struct hba *hba_parse(const char *text, const char *name, char *errbuf, size_t errlen)
{
	struct parser ps = { .errbuf = errbuf, .errlen = errlen };
	struct source src = { .name = name ? name : "auth_hba_file" };
	struct line_reader lr = { .pos = text, .next_line = 1 };
	struct record rec = { 0 };
	struct hba *hba = calloc(1, sizeof(*hba));
	struct hba_rule rule;
	const char *why;
	bool ok = hba != NULL;
	int r, line = 0;

	set_error(errbuf, errlen, "%s", "");
	if (!hba)
		set_error(errbuf, errlen, "%s: out of memory", src.name);
	while (ok && (r = read_record(&lr, &line)) != 0) {
		if (r < 0) {
			ok = line_error(&ps, &src, line, "out of memory");
			break;
		}
		why = tokenize(lr.buf, &rec);
		if (why) {
			ok = line_error(&ps, &src, line, "%s", why);
		} else if (rec.n > 0) {
			memset(&rule, 0, sizeof(rule));
			ok = parse_rule(&ps, &src, line, &rec, &rule);
			if (ok && !grow((void **) &hba->rules, &hba->cap_rules, hba->n_rules, sizeof(rule)))
				ok = line_error(&ps, &src, line, "out of memory");
			if (ok)
				hba->rules[hba->n_rules++] = rule;
			else
				rule_free(&rule);
		}
		record_clear(&rec);
	}
	free(lr.buf);
	if (ok)
		return hba;
	hba_free(hba);
	return NULL;
}

struct hba *hba_load(const char *path, char *errbuf, size_t errlen)
{
	struct hba *hba;
	char why[512];
	char *text = read_text(path, why, sizeof(why));

	if (!text) {
		set_error(errbuf, errlen, "%s", why);
		return NULL;
	}
	hba = hba_parse(text, path, errbuf, errlen);
	free(text);
	return hba;
}

/* ---- matching ---- */

/* The client's address as bytes; family 0 when it has none usable. */
struct client_addr {
	int family;
	uint8_t bytes[16];
};

/* sa's address as bytes of family; false for another family. */
static bool sockaddr_bytes(const struct sockaddr *sa, int family, uint8_t out[16])
{
	if (!sa || sa->sa_family != family)
		return false;
	memset(out, 0, 16);
	if (family == AF_INET)
		memcpy(out, &((const struct sockaddr_in *) (const void *) sa)->sin_addr, 4);
	else
		memcpy(out, &((const struct sockaddr_in6 *) (const void *) sa)->sin6_addr, 16);
	return true;
}

static void client_addr_of(const struct sockaddr *sa, struct client_addr *out)
{
	static const uint8_t v4_mapped_prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	memset(out, 0, sizeof(*out));
	if (sockaddr_bytes(sa, AF_INET, out->bytes)) {
		out->family = AF_INET;
	} else if (sockaddr_bytes(sa, AF_INET6, out->bytes)) {
		out->family = AF_INET6;
		if (memcmp(out->bytes, v4_mapped_prefix, sizeof(v4_mapped_prefix)) == 0) {
			memmove(out->bytes, out->bytes + 12, 4);
			memset(out->bytes + 4, 0, 12);
			out->family = AF_INET;
		}
	}
}

static bool in_net(const struct client_addr *c, int family, const uint8_t net[16], const uint8_t mask[16])
{
	size_t i, n = family == AF_INET ? 4 : 16;

	if (c->family != family)
		return false;
	for (i = 0; i < n; i++)
		if ((c->bytes[i] & mask[i]) != net[i])
			return false;
	return true;
}

/* The machine's interfaces, read once per hba_match and only if a rule needs them. */
struct interfaces {
	bool loaded;
	struct ifaddrs *list;    /* NULL when getifaddrs failed */
};

static bool on_this_machine(struct interfaces *ifs, const struct client_addr *c, bool whole_net)
{
	static const uint8_t all_ones[16] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
	                                      0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
	const struct ifaddrs *ifa;
	uint8_t addr[16], mask[16];
	size_t i;

	if (!ifs->loaded) {
		ifs->loaded = true;
		if (getifaddrs(&ifs->list) != 0) {
			log_warning("auth_hba_file: could not list network interfaces for samehost/samenet: %s",
			            strerror(errno));
			ifs->list = NULL;
		}
	}
	for (ifa = ifs->list; ifa; ifa = ifa->ifa_next) {
		if (!sockaddr_bytes(ifa->ifa_addr, c->family, addr))
			continue;
		if (!whole_net)
			memcpy(mask, all_ones, sizeof(mask));
		else if (!sockaddr_bytes(ifa->ifa_netmask, c->family, mask))
			continue;
		for (i = 0; i < 16; i++)
			addr[i] &= mask[i];
		if (in_net(c, c->family, addr, mask))
			return true;
	}
	return false;
}

/* physical: a physical replication connection, which only the "replication" keyword matches (PostgreSQL's rule) */
static bool names_match(const struct name_list *list, const char *name, const char *user, bool physical)
{
	size_t i;

	for (i = 0; i < list->n; i++) {
		const struct hba_name *n = &list->names[i];

		if (physical) {
			if (n->kind == NAME_REPLICATION)
				return true;
			continue;
		}
		switch (n->kind) {
		case NAME_ALL:
			return true;
		case NAME_SAMEUSER:
			if (strcmp(name, user) == 0)
				return true;
			break;
		case NAME_REPLICATION:
			break;   /* physical replication connections only */
		case NAME_LITERAL:
			if (strcmp(name, n->literal) == 0)
				return true;
			break;
		}
	}
	return false;
}

static bool type_matches(enum hba_conn_type type, bool is_unix, bool is_tls)
{
	switch (type) {
	case HBA_LOCAL:
		return is_unix;
	case HBA_HOST:
		return !is_unix;
	case HBA_HOSTSSL:
		return !is_unix && is_tls;
	case HBA_HOSTNOSSL:
		return !is_unix && !is_tls;
	}
	return false;
}

static bool address_matches(const struct hba_rule *rule, const struct client_addr *c,
                            struct interfaces *ifs)
{
	if (c->family == 0)
		return false;
	switch (rule->addr_kind) {
	case ADDR_ALL:
		return true;
	case ADDR_MASK:
		return in_net(c, rule->family, rule->net, rule->mask);
	case ADDR_SAMEHOST:
		return on_this_machine(ifs, c, false);
	case ADDR_SAMENET:
		return on_this_machine(ifs, c, true);
	case ADDR_NONE:
		break;
	}
	return false;
}

static enum hba_method match(const struct hba *hba, bool is_unix, bool is_tls,
                             const struct sockaddr *addr, const char *database,
                             const char *user, bool physical, int *line);

enum hba_method hba_match(const struct hba *hba, bool is_unix, bool is_tls,
                          const struct sockaddr *addr, const char *database,
                          const char *user, int *line)
{
	return match(hba, is_unix, is_tls, addr, database, user, false, line);
}

enum hba_method hba_match_replication(const struct hba *hba, bool is_unix, bool is_tls,
                                      const struct sockaddr *addr, const char *user, int *line)
{
	return match(hba, is_unix, is_tls, addr, "replication", user, true, line);
}

static enum hba_method match(const struct hba *hba, bool is_unix, bool is_tls,
                             const struct sockaddr *addr, const char *database,
                             const char *user, bool physical, int *line)
{
	struct interfaces ifs = { 0 };
	struct client_addr client;
	enum hba_method method = HBA_REJECT;
	size_t i;

	if (line)
		*line = 0;
	if (!hba || !database || !user)
		return HBA_REJECT;
	client_addr_of(is_unix ? NULL : addr, &client);
	for (i = 0; i < hba->n_rules; i++) {
		const struct hba_rule *rule = &hba->rules[i];

		if (!type_matches(rule->type, is_unix, is_tls) ||
		    !names_match(&rule->databases, database, user, physical) ||
		    !names_match(&rule->users, user, user, false))
			continue;
		if (rule->type != HBA_LOCAL && !address_matches(rule, &client, &ifs))
			continue;
		method = rule->method;
		if (line)
			*line = rule->line;
		break;
	}
	if (ifs.list)
		freeifaddrs(ifs.list);
	return method;
}

/* The rule that begins at line, or NULL. */
static const struct hba_rule *rule_at(const struct hba *hba, int line)
{
	for (size_t i = 0; hba && i < hba->n_rules; i++)
		if (hba->rules[i].line == line)
			return &hba->rules[i];
	return NULL;
}

const char *hba_map(const struct hba *hba, int line)
{
	const struct hba_rule *r = rule_at(hba, line);
	return r ? r->map : NULL;
}

const struct ldap_params *hba_ldap(const struct hba *hba, int line)
{
	const struct hba_rule *r = rule_at(hba, line);
	return r ? r->ldap : NULL;
}

const char *hba_method_name(enum hba_method m)
{
	size_t i;

	for (i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
		if (methods[i].method == m)
			return methods[i].name;
	return "unknown";
}
