// SPDX-License-Identifier: PostgreSQL
'use strict';
// node --test test/   (tests/integration/test_client_node.py runs it against pgsluice:
// DATABASE_URL and ADMIN_URL set, the subject "limited" with a small requests_per_minute)
const test = require('node:test');
const assert = require('node:assert');
const sluice = require('..');

let pg = null;
try { pg = require('pg'); } catch (e) { /* node-postgres not installed: the live tests skip */ }
const live = pg && process.env.DATABASE_URL && process.env.PGSLUICE_INI ? {} : { skip: 'needs node-postgres (pg) and DATABASE_URL' };

// Instead of waiting out a minute-long window: raise "limited"'s limit as the wait would free a
// slot (PGSLUICE_INI: the pooler's ini; RELOAD reads it again), and put it back afterwards.
const fs = require('node:fs');
async function setLimit(rpm) {
  const ini = process.env.PGSLUICE_INI;
  fs.writeFileSync(ini, fs.readFileSync(ini, 'utf8').replace(/^limited = requests_per_minute=\d+$/m,
    `limited = requests_per_minute=${rpm}`));
  const admin = new pg.Client({ connectionString: process.env.ADMIN_URL });
  await admin.connect();
  try { await admin.query('RELOAD'); } finally { await admin.end(); }
}
const timePasses = (waits) => async (ms) => { waits.push(ms); await setLimit(2000); };

test('comment and tag encode as sqlcommenter', () => {
  assert.strictEqual(sluice.comment({ ai_user: "o'brien x/y", ai_model: 'gpt-4o', ai_tokens_in: 12 }),
    "/*ai_model='gpt-4o',ai_tokens_in='12',ai_user='o%27brien%20x%2Fy'*/");
  assert.strictEqual(sluice.comment({ ai_user: null }), '');
  assert.strictEqual(sluice.tag('SELECT 1;', { ai_user: 'a(b)!' }), "SELECT 1 /*ai_user='a%28b%29%21'*/");
  assert.throws(() => sluice.comment({ 'ai_user*/': 'x' }));
});

test('usage reads OpenAI and Anthropic responses', () => {
  assert.deepStrictEqual(sluice.usage({ model: 'gpt-4o', usage: { prompt_tokens: 120, completion_tokens: 30 } }),
    { ai_model: 'gpt-4o', ai_tokens_in: 120, ai_tokens_out: 30 });
  assert.deepStrictEqual(sluice.usage({ model: 'claude-sonnet-4',
    usage: { input_tokens: 200, output_tokens: 50, cache_read_input_tokens: 5 } }),
  { ai_model: 'claude-sonnet-4', ai_tokens_in: 205, ai_tokens_out: 50 });
  assert.deepStrictEqual(sluice.usage({}), {});
});

test('retryAfter reads the HINT of a 53400 only', () => {
  assert.strictEqual(sluice.retryAfter({ code: '53400', hint: 'Retry after 2.5 s.' }), 2.5);
  assert.strictEqual(sluice.retryAfter({ code: '53400' }), null);
  assert.strictEqual(sluice.retryAfter({ code: '42601', hint: 'Retry after 2.5 s.' }), null);
});

test('a tagged statement keeps its subject exactly', live, async () => {
  const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 1 });
  try {
    const subject = "o'brien /ü %20";
    const { rows } = await pool.query(sluice.tag('SELECT $1::int + 1 AS n', { ai_user: subject }), [41]);
    assert.deepStrictEqual(rows, [{ n: 42 }]);
    const admin = new pg.Client({ connectionString: process.env.ADMIN_URL });
    await admin.connect();
    const usage = await admin.query('SHOW USAGE');
    await admin.end();
    assert.ok(usage.rows.some((r) => r.subject === subject), JSON.stringify(usage.rows));
  } finally {
    await pool.end();
  }
});

test('attribute charges the callback and resets the client', live, async () => {
  const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 1 });
  try {
    const inside = await sluice.attribute(pool, "tenant 'a'", 'gpt-4o',
      async (client) => (await client.query('SHOW sluice.user')).rows[0]);
    assert.deepStrictEqual(Object.values(inside), ["tenant 'a'"]);
    const after = (await pool.query('SHOW sluice.user')).rows[0];
    assert.ok(!Object.values(after)[0], JSON.stringify(after));
  } finally {
    await pool.end();
  }
});

test('queryFor waits out a rate-limit refusal', live, async () => {
  const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 1 });
  try {
    let refused = null;
    for (let i = 0; i < 100 && !refused; i++) {
      try { await pool.query(sluice.tag('SELECT 1', { ai_user: 'limited' })); } catch (err) { refused = err; }
    }
    assert.strictEqual(refused && refused.code, '53400');
    const waits = [];
    const { rows } = await sluice.queryFor(pool, 'limited', 'SELECT $1::int AS n', [7], {
      maxWait: 120,
      sleep: timePasses(waits),
    });
    assert.deepStrictEqual(rows, [{ n: 7 }]);
    assert.ok(waits.length >= 1 && waits[0] > 0, JSON.stringify(waits));
  } finally {
    await setLimit(20);
    await pool.end();
  }
});
