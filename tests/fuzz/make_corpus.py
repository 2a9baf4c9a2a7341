#!/usr/bin/env python3
# SPDX-License-Identifier: PostgreSQL
"""make_corpus.py - write the seed corpora in tests/fuzz/corpus/<target>/ (README.md).

Each seed is a real input of its parser: what a client, a server, an
administrator or a previous run would give pgsluice. Run from anywhere; files
are rewritten in place. Inputs found by fuzzing (crashes turned regression
seeds) are added by hand next to these and kept.
"""
import base64
import hashlib
import hmac
import struct
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CORPUS = HERE / "corpus"


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def msg(t, body=b""):
    return t + struct.pack("!I", len(body) + 4) + body


def cstr(s):
    return s.encode() + b"\0"


# -- sqlcommenter tags ----------------------------------------------------------------
TP = "00-0af7651916cd43dd8448eb211c80317c-b7ad6b7169203331-01"
write("tags", "full", "SELECT 1 /*ai_user='alice',ai_model='gpt-4o',ai_tokens_in='12',"
      "ai_tokens_out=30,ai_latency_ms='950',ai_conversation='c%2F1',ai_cache='lookup',"
      f"ai_ttl=60,traceparent='{TP}'*/")
write("tags", "sqlcommenter-spec", "SELECT * FROM FOO /*action='%2Fparam*d',controller='index',"
      "framework='spring',traceparent='00-5bd66ef5095369c7b0d1f8f4bd33716a-c532cb4098ac3dd2-01'*/")
write("tags", "raw-quote", "select 1 /*ai_user='o'brien'*/")
write("tags", "escaped-quote", "select 1 /*ai_user='o\\'brien',ai_model=gpt%2D4o*/")

# -- v3 message streams ------------------------------------------------------------------
write("proto", "simple-query", msg(b"Q", cstr("select 1")) + msg(b"X"))
write("proto", "extended", msg(b"P", cstr("s1") + cstr("select $1::int") + struct.pack("!hi", 1, 23))
      + msg(b"B", cstr("") + cstr("s1") + struct.pack("!hh", 1, 0) + struct.pack("!hi", 1, 2) + b"42"
            + struct.pack("!h", 0))
      + msg(b"D", b"P" + cstr("")) + msg(b"E", cstr("") + struct.pack("!i", 0)) + msg(b"S"))
write("proto", "server-replies",
      msg(b"R", struct.pack("!i", 0)) + msg(b"S", cstr("TimeZone") + cstr("UTC"))
      + msg(b"K", struct.pack("!ii", 1234, 5678))
      + msg(b"T", struct.pack("!h", 1) + cstr("x") + struct.pack("!ihihih", 0, 0, 23, 4, -1, 0))
      + msg(b"D", struct.pack("!hi", 1, 1) + b"1") + msg(b"C", cstr("SELECT 1")) + msg(b"Z", b"I"))
write("proto", "error-response", msg(b"E", b"SERROR\0VERROR\0C22023\0M" + cstr("invalid value")
                                     + b"D" + cstr("detail") + b"H" + cstr("hint") + b"\0")
      + msg(b"N", b"SNOTICE\0C00000\0Mhello\0\0"))
write("proto", "sasl-initial", msg(b"p", cstr("SCRAM-SHA-256") + struct.pack("!i", 8) + b"n,,n=,r="))

# -- startup packets ---------------------------------------------------------------------


def startup(params, version=196608):
    body = struct.pack("!I", version) + b"".join(cstr(k) + cstr(v) for k, v in params) + b"\0"
    return struct.pack("!I", len(body) + 4) + body


write("startup", "psql", startup([("user", "app"), ("database", "app"), ("application_name", "psql"),
                                  ("client_encoding", "UTF8")]))
write("startup", "options", startup([("user", "app"), ("database", "app"),
                                     ("options", "-c sluice.user=alice --sluice.model=gpt\\ 4o "
                                                 "-c search_path=public -c geqo=off")]))
write("startup", "protocol-3.2", startup([("user", "app"), ("_pq_.foo", "bar")], version=(3 << 16) | 2))
write("startup", "ssl-request", struct.pack("!II", 8, 80877103))
write("startup", "cancel-request", struct.pack("!IIii", 16, 80877102, 1234, 5678))

# -- SCRAM (RFC 7677's password "pencil"; nonces fixed as the targets fix them) ----------
SALT = b"W22ZaJ0SNY7soEsU"
ITER = 4096
salted = hashlib.pbkdf2_hmac("sha256", b"pencil", SALT, ITER)
client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
stored_key = hashlib.sha256(client_key).digest()
CNONCE = "rOprNGfwEbeRWgbNEkqO"
SNONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731


def proof_and_signature(client_first_bare, server_first, final_wo_proof, ck, sk):
    auth = f"{client_first_bare},{server_first},{final_wo_proof}".encode()
    sig = hmac.new(hashlib.sha256(ck).digest(), auth, hashlib.sha256).digest()
    proof = bytes(a ^ b for a, b in zip(ck, sig))
    return proof, hmac.new(sk, auth, hashlib.sha256).digest()


# server side: a client logging in to pgsluice
bare = f"n=,r={CNONCE}"
sfirst = f"r={CNONCE}{SNONCE},s={b64(SALT)},i={ITER}"
fwp = f"c=biws,r={CNONCE}{SNONCE}"
proof, _ = proof_and_signature(bare, sfirst, fwp, client_key, server_key)
write("scram_server", "login", f"n,,{bare}\0{fwp},p={b64(proof)}")
write("scram_server", "wrong-proof", f"n,,{bare}\0{fwp},p={b64(bytes(32))}")
write("scram_server", "y-flag", f"y,,n=,r={CNONCE}\0c=eSws,r={CNONCE}{SNONCE},p={b64(proof)}")

# client side: pgsluice logging in to a server with pass-through keys (ClientKey 0x5a * 32)
ck = bytes([0x5a]) * 32
snonce = "3rfcNHYJY1ZVvWVs7j"
sfirst = f"r={CNONCE}{snonce},s={b64(SALT)},i={ITER}"
fwp = f"c=biws,r={CNONCE}{snonce}"
_, sig = proof_and_signature(f"n=,r={CNONCE}", sfirst, fwp, ck, server_key)
write("scram_client", "login", f"{sfirst}\0v={b64(sig)}")
write("scram_client", "server-error", f"{sfirst}\0e=invalid-proof")
write("scram_client", "other-salt", f"r={CNONCE}{snonce},s={b64(b'x' * 16)},i=4096\0v=AAAA")

# -- configuration -----------------------------------------------------------------------
write("config", "pgsluice.ini", (ROOT / "etc" / "pgsluice.ini").read_bytes())
write("config", "limits", "[databases]\napp = host=127.0.0.1 port=5432 dbname=app pool_size=5\n"
      "* = host=/var/run/postgresql\n[users]\napp = pool_mode=session max_user_connections=3\n"
      "[pgsluice]\nlisten_port = 6432\nauth_type = scram-sha-256\npool_mode = transaction\n"
      "query_wait_timeout = 1.5\ncache_max_memory = 64MB\n[limits]\n"
      "default = requests_per_minute=600 tokens_per_minute=200000\n"
      "alice = requests_per_minute=60 cost_cents_per_month=500\nalice/gpt-4o = tokens_per_day=50000\n")
write("config", "pgbouncer-section", "[pgbouncer]\nlisten_addr = *\nadmin_users = admin, ops\n"
      "ignore_startup_parameters = extra_float_digits,options\n")

# -- auth_file ---------------------------------------------------------------------------
scram_secret = f"SCRAM-SHA-256${ITER}:{b64(SALT)}${b64(stored_key)}:{b64(server_key)}"
write("auth_file", "userlist.txt", (ROOT / "etc" / "userlist.txt").read_bytes())
write("auth_file", "kinds", '"app" "app_pw"\n"md5_user" "md5' + hashlib.md5(b"md5_pwmd5_user").hexdigest()
      + '"\n' + f'"scram_user" "{scram_secret}"\n' + '"quo""ted" "pa ss" trailing\n; comment\n')

# -- pg_hba.conf -------------------------------------------------------------------------
write("hba", "pg_hba.conf", "# TYPE  DATABASE  USER  ADDRESS  METHOD\n"
      "local   all       all                  trust\n"
      "host    app       app   127.0.0.1/32   scram-sha-256\n"
      "hostssl all       +admins 10.0.0.0/8   md5\n"
      "hostnossl \"app\",pgsluice alice,bob ::1/128 password\n"
      "host    all       all   192.168.0.0 255.255.0.0 reject\n"
      "hostssl all       all   samenet      cert\n")

# -- admin console -----------------------------------------------------------------------
write("admin", "show", "SHOW POOLS;")
write("admin", "kill", "KILL \"app\" -- a comment\n")
write("admin", "set-key", "default_pool_size\n20")
write("admin", "set-list", "ignore_startup_parameters\n'extra_float_digits, options'")
write("admin", "comments", "/* x */ SET query_wait_timeout = '30' ;")

# -- settings_scan -----------------------------------------------------------------------
for name, text in [("set-timezone", "SET TimeZone = 'UTC'"), ("select", "SELECT 1; -- SET x = 1"),
                   ("set-local", "BEGIN; SET LOCAL work_mem = '64MB'; COMMIT"),
                   ("dollar", "DO $$BEGIN PERFORM set_config('search_path', 'x', false); END$$"),
                   ("reset-all", "RESET ALL")]:
    write("settings_scan", name, text)

# -- journal segments (first byte even: raw file; odd: frames the target wraps) ----------


def record(subject="alice", model="gpt-4o", cached=0):
    fixed = bytes(range(16)) + struct.pack("<qqqqd", 1764979200000000, 120, 30, 950, 12.5) + bytes([cached])
    strings = [subject, "app", "app", model, "conv-1", TP[3:35], "host:6432"]
    return fixed + b"".join(struct.pack("<H", len(s.encode())) + s.encode() for s in strings)


def frame(payload, version=1):
    head = struct.pack("<HHI", version, 0, len(payload))
    return b"SLUJ" + head + struct.pack("<I", zlib.crc32(head + payload)) + payload


seg = frame(record()) + frame(record("bob", "o1", 1))
write("journal", "segment", b"\0" + seg)
write("journal", "torn-tail", b"\0" + seg + frame(record())[:-5])
write("journal", "bad-crc", b"\0" + seg[:20] + b"X" + seg[21:])
write("journal", "frames", b"\1" + bytes([1]) + struct.pack("<H", len(record())) + record())
