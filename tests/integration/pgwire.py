# SPDX-License-Identifier: PostgreSQL
"""pgwire.py - a minimal PostgreSQL v3 frontend for the login checks psycopg cannot make.

libpq (and so psycopg) reports a failed connection attempt as text only: the
SQLSTATE of the server's ErrorResponse is lost. The tests assert SQLSTATEs
(docs/errors.md), so this module performs the startup and authentication
exchange itself (trust, cleartext, md5, SCRAM-SHA-256) and returns the fields
of the ErrorResponse, or the session after ReadyForQuery. It also sends raw
simple-protocol queries, for tests that need exact control over packet sizes.

It is a test tool: blocking sockets, bounded by a timeout on every read.
"""

import base64
import hashlib
import hmac
import os
import socket
import struct
import time

PROTOCOL_V3 = 196608

# Error/notice field type bytes (PostgreSQL protocol "Error and Notice Message Fields").
FIELD_NAMES = {
    "S": "severity_localized", "V": "severity", "C": "sqlstate", "M": "message",
    "D": "detail", "H": "hint", "P": "position", "W": "where", "F": "file",
    "L": "line", "R": "routine",
}


class WireError(Exception):
    """The server ended the conversation without an ErrorResponse we could read."""


class ServerError(Exception):
    """An ErrorResponse; fields maps FIELD_NAMES values to text."""

    def __init__(self, fields):
        self.fields = fields
        self.sqlstate = fields.get("sqlstate")
        self.severity = fields.get("severity") or fields.get("severity_localized")
        self.message = fields.get("message", "")
        super().__init__(f"{self.severity} {self.sqlstate}: {self.message}")


def _parse_fields(body):
    fields = {}
    for part in body.split(b"\0"):
        if not part:
            continue
        key = chr(part[0])
        fields[FIELD_NAMES.get(key, key)] = part[1:].decode("utf-8", "replace")
    return fields


def data_rows(messages):
    """Decode the DataRow messages among (type, body) messages (text format) to lists of str/None."""
    rows = []
    for msg_type, body in messages:
        if msg_type != "D":
            continue
        ncols = struct.unpack("!H", body[:2])[0]
        pos, row = 2, []
        for _ in range(ncols):
            n = struct.unpack("!i", body[pos:pos + 4])[0]
            pos += 4
            if n < 0:
                row.append(None)
            else:
                row.append(body[pos:pos + n].decode())
                pos += n
        rows.append(row)
    return rows


class Session:
    """One frontend connection. Use login() to make one."""

    def __init__(self, sock, timeout):
        self.sock = sock
        self.timeout = timeout
        self.parameters = {}
        self.backend_key = None
        self.notices = []
        self._buf = b""

    # -- framing -------------------------------------------------------------
    def send(self, msg_type, body=b""):
        """Send one message; msg_type b"" for the untyped startup packets."""
        self.sock.sendall(msg_type + struct.pack("!I", len(body) + 4) + body)

    def _read_exact(self, n, deadline):
        while len(self._buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no complete message within {self.timeout} s")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError as exc:
                raise WireError("connection reset by peer") from exc
            if not chunk:
                raise WireError("connection closed by peer")
            self._buf += chunk
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def read(self, timeout=None):
        """Read one backend message: (type byte as str, body bytes)."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        head = self._read_exact(5, deadline)
        msg_type, length = chr(head[0]), struct.unpack("!I", head[1:])[0]
        if length < 4 or length > 64 * 1024 * 1024:
            raise WireError(f"bad message length {length} for type {msg_type!r}")
        return msg_type, self._read_exact(length - 4, deadline)

    def read_until_ready(self):
        """Consume messages up to ReadyForQuery; raise ServerError on ErrorResponse.

        Returns the list of (type, body) read before ReadyForQuery.
        """
        seen = []
        error = None
        while True:
            try:
                msg_type, body = self.read()
            except WireError:
                if error is not None:
                    raise error
                raise
            if msg_type == "E":
                error = ServerError(_parse_fields(body))
                if error.severity in ("FATAL", "PANIC"):
                    raise error
            elif msg_type == "N":
                self.notices.append(_parse_fields(body))
            elif msg_type == "S":
                name, value = body.split(b"\0")[:2]
                self.parameters[name.decode()] = value.decode()
            elif msg_type == "K":
                self.backend_key = struct.unpack("!II", body)
            elif msg_type == "Z":
                if error is not None:
                    raise error
                return seen
            else:
                seen.append((msg_type, body))

    # -- queries ---------------------------------------------------------------
    def query(self, sql):
        """Simple-protocol query; returns the rows as lists of str/None."""
        if isinstance(sql, str):
            sql = sql.encode()
        self.send(b"Q", sql + b"\0")
        return data_rows(self.read_until_ready())

    def is_closed_by_peer(self, timeout=2.0):
        """True when the peer closes the socket within timeout (pending messages are skipped)."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                self.read(timeout=max(0.01, deadline - time.monotonic()))
        except WireError:
            return True
        except TimeoutError:
            return False

    def close(self):
        try:
            self.send(b"X")
        except OSError:
            pass
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -- authentication ------------------------------------------------------------
def _md5_response(user, password, salt):
    inner = hashlib.md5((password + user).encode()).hexdigest()
    return "md5" + hashlib.md5(inner.encode() + salt).hexdigest()


def _scram_exchange(sess, mechanisms, password):
    if "SCRAM-SHA-256" not in mechanisms:
        raise WireError(f"server offers no SCRAM-SHA-256 (offers {mechanisms})")
    nonce = base64.b64encode(os.urandom(18)).decode()
    client_first_bare = f"n=,r={nonce}"
    client_first = ("n,," + client_first_bare).encode()
    sess.send(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(client_first)) + client_first)

    msg_type, body = sess.read()
    if msg_type == "E":
        raise ServerError(_parse_fields(body))
    code = struct.unpack("!I", body[:4])[0]
    if msg_type != "R" or code != 11:
        raise WireError(f"expected SASLContinue, got {msg_type!r} code {code}")
    server_first = body[4:].decode()
    attrs = dict(item.split("=", 1) for item in server_first.split(","))
    if not attrs["r"].startswith(nonce):
        raise WireError("server nonce does not extend the client nonce")
    salt = base64.b64decode(attrs["s"])
    iterations = int(attrs["i"])

    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    final_without_proof = f"c=biws,r={attrs['r']}"
    auth_message = f"{client_first_bare},{server_first},{final_without_proof}".encode()
    signature = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature))
    final = f"{final_without_proof},p={base64.b64encode(proof).decode()}".encode()
    sess.send(b"p", final)


def login(host, port, user, dbname, password=None, timeout=5.0, params=None):
    """Open a session: startup + authentication, up to the first ReadyForQuery.

    Raises ServerError (with .sqlstate) when the server refuses, WireError when
    it closes the connection without an ErrorResponse, TimeoutError when it
    does not answer within timeout seconds.
    """
    if str(host).startswith("/"):         # a Unix socket directory, as libpq's host=
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(f"{host}/.s.PGSQL.{port}")
    else:
        sock = socket.create_connection((host, port), timeout=timeout)
    sess = Session(sock, timeout)
    try:
        startup = {"user": user, "database": dbname}
        startup.update(params or {})
        body = struct.pack("!I", PROTOCOL_V3)
        for key, value in startup.items():
            body += key.encode() + b"\0" + str(value).encode() + b"\0"
        body += b"\0"
        sess.send(b"", body)

        while True:
            msg_type, body = sess.read()
            if msg_type == "E":
                raise ServerError(_parse_fields(body))
            if msg_type == "N":
                sess.notices.append(_parse_fields(body))
                continue
            if msg_type != "R":
                raise WireError(f"unexpected message {msg_type!r} during authentication")
            code = struct.unpack("!I", body[:4])[0]
            if code == 0:        # AuthenticationOk
                break
            if password is None and code in (3, 5, 10):
                raise WireError(f"server asks for a password (auth code {code}) but none given")
            if code == 3:        # cleartext
                sess.send(b"p", password.encode() + b"\0")
            elif code == 5:      # md5
                sess.send(b"p", _md5_response(user, password, body[4:8]).encode() + b"\0")
            elif code == 10:     # SASL
                mechanisms = [m.decode() for m in body[4:].split(b"\0") if m]
                _scram_exchange(sess, mechanisms, password)
            elif code == 12:     # SASLFinal: the server's signature; fine to skip checking
                continue
            else:
                raise WireError(f"unsupported authentication request {code}")
        sess.read_until_ready()
        return sess
    except BaseException:
        sock.close()
        raise


def login_error(host, port, user, dbname, password=None, timeout=5.0, params=None):
    """The ServerError a login attempt ends with; fails when the login succeeds."""
    try:
        sess = login(host, port, user, dbname, password, timeout, params)
    except ServerError as err:
        return err
    sess.close()
    raise AssertionError(f"login as {user!r} to {dbname!r} succeeded, expected an error")
