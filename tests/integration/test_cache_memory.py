# SPDX-License-Identifier: PostgreSQL
"""The completion cache's memory bound (issue 14, item 9; docs/operations.md, "Memory").

A cache of cache_max_memory = 64 MB filled far past its size with answers of mixed sizes
(a few bytes to a few hundred kB), churning under LRU eviction: pgsluice's RSS stays within
1.2 x cache_max_memory + CACHE_RSS_CONSTANT (the process without a cache: code, libpq,
OpenSSL, buffers). CACHE FLUSH gives the memory back: RSS falls below the start RSS plus
FLUSHED_RSS_SLACK.
"""

import random

import pytest

import harness
from test_admin import console



pytestmark = [pytest.mark.serial,    # RSS bounds: alone, not beside other workers (conftest.py)
              pytest.mark.skipif(harness.is_pgbouncer(), reason="the AI middleware is pgsluice's own"),
              pytest.mark.skipif(harness.sanitized_build(), reason="RSS of a sanitizer build says nothing of malloc's")]

MB = 1024 * 1024
CACHE_MAX = 64 * MB
CACHE_RSS_CONSTANT = 16 * MB     # docs/operations.md: the documented constant
FLUSHED_RSS_SLACK = 16 * MB      # docs/operations.md: what a flushed cache may keep

LOOKUP = "SELECT repeat(md5(%s::text), %s::int) AS a /*ai_cache='lookup'*/"


def rss(pid):
    return harness.rss_bytes(pid)


def sizes(rng, total, mix):
    """Answer sizes (in md5 repeats of 32 bytes) adding up to about total bytes. mixed: mostly
    small, some of tens of kB, a few of hundreds of kB (under cache_max_entry_size = 1 MB);
    small: 32 B to 1 kB only, so that per-entry costs (struct, key, malloc headers) weigh most."""
    left = total
    while left > 0:
        r = rng.random()
        if mix == "small" or r < 0.70:
            n = rng.randint(1, 32 if mix == "small" else 64)
        elif r < 0.95:
            n = rng.randint(64, 2048)         # 2 .. 64 kB
        else:
            n = rng.randint(2048, 16384)      # 64 .. 512 kB
        # what the cache counts for small answers is mostly not the answer: weigh them so
        left -= 32 * n if mix == "mixed" else 32 * n + 500
        yield n


def fill(pooler, salt, total, rng, mix):
    """Look up distinct keys (pipelined, 500 at a time) whose answers and keys add up to about
    total bytes; returns how many."""
    count = 0
    batch = []
    with pooler.connect() as conn:
        cur = conn.cursor()
        for n in sizes(rng, total, mix):
            count += 1
            batch.append((f"{salt}-{count}", n))
            if len(batch) == 500:
                cur.executemany(LOOKUP, batch)
                batch = []
        if batch:
            cur.executemany(LOOKUP, batch)
        # and the answers are right (a hit now, for the last one)
        key, n = f"{salt}-{count}", 1
        assert len(conn.execute(LOOKUP, (key, n)).fetchone()[0]) == 32 * n
    return count


def cache_bytes(pooler):
    with console(pooler) as admin:
        cur = admin.execute("SHOW CACHE")
        names = [d.name for d in cur.description]
        return dict(zip(names, cur.fetchone()))


@pytest.mark.parametrize("mix", ["mixed", "small"])
def test_rss_stays_within_the_bound_while_the_cache_churns_and_flush_gives_it_back(sluice, pg, mix):
    pooler = sluice(pool_mode="transaction", cache_max_memory="64MB")
    rng = random.Random(14)
    with pooler.connect() as conn:
        conn.execute("SELECT 1").fetchall()
    start = rss(pooler.pid)
    bound = 1.2 * CACHE_MAX + CACHE_RSS_CONSTANT
    peak = 0
    for round_ in range(3):     # each round stores about 1.5 x cache_max_memory of answers
        fill(pooler, f"r{round_}", int(1.5 * CACHE_MAX), rng, mix)
        now = rss(pooler.pid)
        peak = max(peak, now)
        row = cache_bytes(pooler)
        print(f"{mix} round {round_}: RSS {now / MB:.1f} MB, cache entries {row['entries']},"
              f" counted {int(row['bytes']) / MB:.1f} MB, evictions {row['evictions']}")
        assert int(row["bytes"]) <= CACHE_MAX
        assert int(row["evictions"]) > 0
        assert now <= bound, f"RSS {now / MB:.1f} MB over {bound / MB:.1f} MB"
    with console(pooler) as admin:
        admin.execute("CACHE FLUSH")
    flushed = rss(pooler.pid)
    print(f"start {start / MB:.1f} MB, peak {peak / MB:.1f} MB (bound {bound / MB:.1f} MB),"
          f" after CACHE FLUSH {flushed / MB:.1f} MB")
    assert cache_bytes(pooler)["entries"] == 0
    assert flushed <= start + FLUSHED_RSS_SLACK, \
        f"after CACHE FLUSH RSS {flushed / MB:.1f} MB, start {start / MB:.1f} MB"
