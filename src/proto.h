/* SPDX-License-Identifier: PostgreSQL */
/*
 * proto.h - the PostgreSQL v3 wire protocol as pgsluice needs it: message
 * type constants, a tiny builder API (begin, add, end) and a bounds-checked
 * reader. Owns no sockets; callers hand it iobufs and byte ranges.
 */
#ifndef SLUICE_PROTO_H
#define SLUICE_PROTO_H

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "iobuf.h"
#include "pgerror.h"

struct iobuf;

/* Startup packet codes (protocol-message-formats.html). */
#define PROTO_VERSION(major, minor) (((uint32_t)(major) << 16) | (minor))
#define PROTO_V3_0              PROTO_VERSION(3, 0)
#define PROTO_CANCEL_REQUEST    80877102
#define PROTO_SSL_REQUEST       80877103
#define PROTO_GSSENC_REQUEST    80877104
/* PostgreSQL's MAX_STARTUP_PACKET_LENGTH: a startup packet beyond it is refused. */
#define PROTO_MAX_STARTUP_LEN   10000
#define PROTO_HEADER_LEN        5      /* type byte + int32 length */

/* Frontend message types (PostgreSQL's protocol.h names). */
#define PqMsg_Bind              'B'
#define PqMsg_Close             'C'
#define PqMsg_Describe          'D'
#define PqMsg_Execute           'E'
#define PqMsg_FunctionCall      'F'
#define PqMsg_Flush             'H'
#define PqMsg_Parse             'P'
#define PqMsg_Query             'Q'
#define PqMsg_Sync              'S'
#define PqMsg_Terminate         'X'
#define PqMsg_CopyFail          'f'
#define PqMsg_PasswordMessage   'p'  /* also SASLInitialResponse, SASLResponse */
#define PqMsg_CopyData          'd'
#define PqMsg_CopyDone          'c'

/* Backend message types. */
#define PqMsg_ParseComplete     '1'
#define PqMsg_BindComplete      '2'
#define PqMsg_CloseComplete     '3'
#define PqMsg_NotificationResponse 'A'
#define PqMsg_CommandComplete   'C'
#define PqMsg_DataRow           'D'
#define PqMsg_ErrorResponse     'E'
#define PqMsg_CopyInResponse    'G'
#define PqMsg_CopyOutResponse   'H'
#define PqMsg_EmptyQueryResponse 'I'
#define PqMsg_BackendKeyData    'K'
#define PqMsg_NoticeResponse    'N'
#define PqMsg_AuthenticationRequest 'R'
#define PqMsg_ParameterStatus   'S'
#define PqMsg_RowDescription    'T'
#define PqMsg_ReadyForQuery     'Z'
#define PqMsg_NegotiateProtocolVersion 'v'

/* AuthenticationRequest codes. */
#define AUTH_REQ_OK             0
#define AUTH_REQ_PASSWORD       3
#define AUTH_REQ_MD5            5
#define AUTH_REQ_SASL           10
#define AUTH_REQ_SASL_CONT      11
#define AUTH_REQ_SASL_FIN       12

/* SQLSTATEs pgsluice raises itself (errcodes-appendix.html; docs/errors.md). */
#define SQLSTATE_SUCCESSFUL_COMPLETION   "00000"   /* NOTICEs */
#define SQLSTATE_PROTOCOL_VIOLATION      "08P01"
#define SQLSTATE_CONNECTION_FAILURE      "08006"
#define SQLSTATE_INVALID_AUTH_SPEC       "28000"
#define SQLSTATE_INVALID_PASSWORD        "28P01"
#define SQLSTATE_INVALID_CATALOG_NAME    "3D000"
#define SQLSTATE_TOO_MANY_CONNECTIONS    "53300"
#define SQLSTATE_FEATURE_NOT_SUPPORTED   "0A000"
#define SQLSTATE_ADMIN_SHUTDOWN          "57P01"
#define SQLSTATE_QUERY_CANCELED          "57014"
#define SQLSTATE_IDLE_IN_TRANSACTION_TIMEOUT "25P03"
#define SQLSTATE_TRANSACTION_TIMEOUT     "25P04"
#define SQLSTATE_IDLE_SESSION_TIMEOUT    "57P05"
#define SQLSTATE_CANNOT_CONNECT_NOW      "57P03"
#define SQLSTATE_OBJECT_NOT_IN_STATE     "55000"   /* e.g. a database DISABLEd on the console */
#define SQLSTATE_OUT_OF_MEMORY           "53200"
#define SQLSTATE_INTERNAL_ERROR          "XX000"
#define SQLSTATE_CONFIG_FILE_ERROR       "F0000"   /* PgBouncer's "bouncer config error" */
#define SQLSTATE_UNDEFINED_OBJECT        "42704"
#define SQLSTATE_INSUFFICIENT_PRIVILEGE  "42501"
#define SQLSTATE_RATE_LIMIT_EXCEEDED     "53400"   /* configuration_limit_exceeded */
#define SQLSTATE_DISK_FULL               "53100"
#define SQLSTATE_INVALID_PARAMETER_VALUE "22023"
#define SQLSTATE_DUPLICATE_PSTATEMENT    "42P05"   /* duplicate_prepared_statement */
#define SQLSTATE_PROGRAM_LIMIT_EXCEEDED  "54000"

/*
 * A message under construction. Small messages stay in the inline buffer;
 * larger ones move to the heap. After an allocation failure every add is a
 * no-op and msg_end reports false, so callers check once at the end.
 */
struct msgbuf {
	uint8_t *data;
	size_t len;
	size_t cap;
	size_t start;          /* offset of the message being built */
	bool failed;
	uint8_t inline_buf[256];
};

/* Prepare an empty buffer. */
void msg_init(struct msgbuf *m);
/* Free heap storage; the buffer can be reused after msg_init. */
void msg_free(struct msgbuf *m);
/* Start a message of type (0 for the untyped startup-style packets). */
void msg_begin(struct msgbuf *m, char type);
void msg_add_byte(struct msgbuf *m, uint8_t b);
void msg_add_int16(struct msgbuf *m, int16_t v);
void msg_add_int32(struct msgbuf *m, int32_t v);
void msg_add_bytes(struct msgbuf *m, const void *p, size_t n);
/* Add s with its terminating NUL (a C string field). */
void msg_add_string(struct msgbuf *m, const char *s);
/* Patch the length of the current message. Returns false after any failure. */
bool msg_end(struct msgbuf *m);
/* Append all finished messages to out; returns false on failure. */
bool msg_flush_to(struct msgbuf *m, struct iobuf *out);

/*
 * Append an ErrorResponse (type 'E') or NoticeResponse ('N') to m with
 * severity (ERROR, FATAL, NOTICE...), sqlstate, the primary message from
 * fmt, and optional detail and hint (NULL to omit). Fields per
 * protocol-error-fields.html; V (non-localized severity) included.
 */
void msg_add_error(struct msgbuf *m, char type, const char *severity, const char *sqlstate,
                   const char *detail, const char *hint, const char *fmt, ...)
	__attribute__((format(printf, 7, 8)));
void msg_add_errorv(struct msgbuf *m, char type, const char *severity, const char *sqlstate,
                    const char *detail, const char *hint, const char *fmt, va_list ap);

/* ReadyForQuery with status 'I', 'T' or 'E'. */
void msg_add_ready(struct msgbuf *m, char status);
/* ParameterStatus name=value. */
void msg_add_parameter_status(struct msgbuf *m, const char *name, const char *value);

/*
 * The length word of the message header at hdr (hdr[0] the type byte; 5
 * bytes readable): one unaligned load and a byte swap, for the relays'
 * loops over whole messages.
 */
static inline uint32_t proto_header_len(const uint8_t *hdr)
{
	uint32_t be;
	memcpy(&be, hdr + 1, sizeof(be));
	return ntohl(be);
}

/* A bounds-checked view of one message body (after the header). */
struct msgreader {
	const uint8_t *data;
	size_t len;
	size_t pos;
	bool bad;              /* set on any overrun; reads then return 0 / "" */
};

/*
 * The reader's functions are inline: a Parse or Bind is read with several of
 * them, on every extended-protocol statement.
 */
/* Start reading len bytes at data (borrowed). */
static inline void mr_init(struct msgreader *r, const void *data, size_t len)
{
	r->data = data;
	r->len = len;
	r->pos = 0;
	r->bad = false;
}

/* n raw bytes; NULL and bad=true if fewer remain. Borrowed. */
static inline const uint8_t *mr_bytes(struct msgreader *r, size_t n)
{
	if (r->bad || r->len - r->pos < n) {
		r->bad = true;
		return NULL;
	}
	const uint8_t *p = r->data + r->pos;
	r->pos += n;
	return p;
}

/* One byte; 0 and bad=true if none remains. */
static inline uint8_t mr_byte(struct msgreader *r)
{
	const uint8_t *p = mr_bytes(r, 1);
	return p ? *p : 0;
}

/* A big-endian int16; 0 and bad=true if fewer than 2 bytes remain. */
static inline int16_t mr_int16(struct msgreader *r)
{
	const uint8_t *p = mr_bytes(r, 2);
	return p ? (int16_t)((p[0] << 8) | p[1]) : 0;
}

/* A big-endian int32; 0 and bad=true if fewer than 4 bytes remain. */
static inline int32_t mr_int32(struct msgreader *r)
{
	const uint8_t *p = mr_bytes(r, 4);
	return p ? (int32_t)(((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
	                     ((uint32_t)p[2] << 8) | p[3]) : 0;
}

/* A NUL-terminated string inside the body; "" and bad=true if unterminated. Borrowed. */
static inline const char *mr_string(struct msgreader *r)
{
	if (r->bad)
		return "";
	const uint8_t *start = r->data + r->pos;
	if (r->pos < r->len && *start == '\0') {
		r->pos++;      /* the empty name of the unnamed statement or portal: no memchr */
		return (const char *)start;
	}
	const uint8_t *nul = memchr(start, 0, r->len - r->pos);
	if (!nul) {
		r->bad = true;
		return "";
	}
	r->pos += (size_t)(nul - start) + 1;
	return (const char *)start;
}

/* Bytes not read yet. */
static inline size_t mr_remaining(const struct msgreader *r)
{
	return r->bad ? 0 : r->len - r->pos;
}

/*
 * The next name/value pair of a StartupMessage body read by r (after the
 * protocol version): true with *name (non-empty) and *value borrowed from
 * the body; false at the empty name that ends the list, or when the body is
 * malformed (then r->bad; protocol-message-formats.html, StartupMessage).
 */
bool proto_startup_param(struct msgreader *r, const char **name, const char **value);

/*
 * Read a typed message header from the front of buf without consuming it.
 * Returns false (*type and *len 0) when fewer than 5 bytes are buffered. *len is the length
 * field (it counts itself, so the body is len - 4 bytes). Inline: the
 * relays ask it for every message.
 */
static inline bool proto_peek_header(const struct iobuf *buf, uint8_t *type, uint32_t *len)
{
	if (iobuf_len(buf) < PROTO_HEADER_LEN) {
		*type = 0;    /* set anyway: inline, callers' compilers would see them unset */
		*len = 0;
		return false;
	}
	const uint8_t *hdr = iobuf_data(buf);
	*type = hdr[0];
	*len = proto_header_len(hdr);
	return true;
}

/*
 * Copy the fields of an ErrorResponse/NoticeResponse body (len bytes) into
 * *out (protocol-error-fields.html: S, C, M, D, H), each cut to its size;
 * missing fields are "". Returns false on a malformed body (*out is then
 * partly filled).
 */
bool proto_parse_error(const void *body, size_t len, struct pg_error *out);

/* The StartupMessage's "replication" parameter (protocol-replication.html). */
enum replication_mode { REPLICATION_NONE, REPLICATION_PHYSICAL, REPLICATION_LOGICAL };

/*
 * Parse a "replication" value as PostgreSQL does: "database" is logical
 * replication, a true boolean (true, on, yes, 1) physical, a false one
 * none; case does not matter. Returns false for anything else.
 */
bool proto_parse_replication(const char *value, enum replication_mode *out);

/* The value that asks a server for mode in a StartupMessage ("database" or "true"); NULL for none. */
const char *proto_replication_value(enum replication_mode mode);

#endif
