// SPDX-License-Identifier: PostgreSQL
'use strict';
// The knex and drizzle wrappers against pgsluice (tests/integration/test_client_node.py runs
// `node --test test/` with DATABASE_URL and ADMIN_URL set, the subject "limited" with a small
// requests_per_minute). The live tests need pg, knex and drizzle-orm (npm ci).
const test = require('node:test');
const assert = require('node:assert');
const sluice = require('..');

let pg = null;
let Knex = null;
let drizzleOrm = null;
try {
  pg = require('pg');
  Knex = require('knex');
  drizzleOrm = { ...require('drizzle-orm'), ...require('drizzle-orm/node-postgres'), ...require('drizzle-orm/pg-core') };
} catch (e) { pg = null; /* not installed: the live tests skip */ }
const live = pg && process.env.DATABASE_URL && process.env.PGSLUICE_INI ? {} : { skip: 'needs pg, knex and drizzle-orm (npm ci) and DATABASE_URL' };

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

async function usageOf(subject) {
  const admin = new pg.Client({ connectionString: process.env.ADMIN_URL });
  await admin.connect();
  try {
    const { rows } = await admin.query('SHOW USAGE');
    return rows.filter((r) => r.subject === subject)
      .map((r) => ({ model: r.model, requests: Number(r.requests) }))
      .sort((a, b) => a.model.localeCompare(b.model));
  } finally {
    await admin.end();
  }
}

// use up "limited"'s burst with plain tagged statements; returns the refusal
async function exhaust(pool) {
  for (let i = 0; i < 100; i++) {
    try { await pool.query(sluice.tag('SELECT 1', { ai_user: 'limited' })); } catch (err) { return err; }
  }
  return null;
}

test('the tags pgsluice reads: the same text from the Node and the Python kit', () => {
  // the Python kit's comment() gives the same text (tests/integration/test_client_python.py)
  assert.strictEqual(sluice.comment({ ai_user: "a'b c/d%e+f~g!h*(i)", ai_model: 'm:1?x=y&z' }),
    "/*ai_model='m%3A1%3Fx%3Dy%26z',ai_user='a%27b%20c%2Fd%25e%2Bf~g%21h%2A%28i%29'*/");
});

test('knex: queryFor tags the builder, returns its rows and records the usage', live, async () => {
  const { tagging, queryFor } = require('../knex');
  const knex = Knex(tagging({ client: 'pg', connection: process.env.DATABASE_URL, pool: { min: 0, max: 1 } }));
  try {
    const subject = "knex o'brien /ü %20";
    await knex.schema.dropTableIfExists('kit_knex');
    await knex.schema.createTable('kit_knex', (t) => { t.integer('k').primary(); t.text('text'); });
    const resp = { model: 'gpt-4o', usage: { prompt_tokens: 120, completion_tokens: 30 } };
    const inserted = await queryFor(knex('kit_knex').insert({ k: 1, text: "a%b 'q'" }).returning('k'), subject,
      { tags: sluice.usage(resp) });
    assert.deepStrictEqual(inserted, [{ k: 1 }]);
    const rows = await queryFor(() => knex('kit_knex').select('text').where({ k: 1 }), subject,
      { model: 'claude-sonnet-4' });
    assert.deepStrictEqual(rows, [{ text: "a%b 'q'" }]);
    await knex('kit_knex').select('k');         // untagged: charged to nobody
    // (token counts reach SHOW USAGE with usage records, that is with an ai_database:
    // tests/integration/test_client_sqlalchemy.py checks those)
    assert.deepStrictEqual((await usageOf(subject)).map((u) => [u.model, u.requests]),
      [['claude-sonnet-4', 1], ['gpt-4o', 1]]);
    await knex.schema.dropTable('kit_knex');
  } finally {
    await knex.destroy();
  }
});

test('knex: queryFor waits out a rate-limit refusal', live, async () => {
  const { tagging, queryFor } = require('../knex');
  const knex = Knex(tagging({ client: 'pg', connection: process.env.DATABASE_URL, pool: { min: 0, max: 1 } }));
  const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 1 });
  try {
    const refused = await exhaust(pool);
    assert.strictEqual(refused && refused.code, '53400');
    const waits = [];
    const rows = await queryFor(knex.select(knex.raw('?::int + 1 as n', [41])), 'limited', {
      maxWait: 120, sleep: timePasses(waits),
    });
    assert.deepStrictEqual(rows, [{ n: 42 }]);
    assert.ok(waits.length >= 1 && waits[0] > 0, JSON.stringify(waits));
  } finally {
    await setLimit(20);
    await pool.end();
    await knex.destroy();
  }
});

test('drizzle: queryFor tags every statement through tagging(pool) and records the usage', live, async () => {
  const { drizzle, pgTable, integer, text, eq, sql } = drizzleOrm;
  const { tagging, queryFor } = require('../drizzle');
  const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 1 });
  const db = drizzle(tagging(pool));
  const answers = pgTable('kit_drizzle', { k: integer('k').primaryKey(), text: text('text') });
  try {
    assert.ok(tagging(pool) instanceof pg.Pool);
    const subject = "drizzle o'brien /ü %20";
    await db.execute(sql`DROP TABLE IF EXISTS kit_drizzle`);
    await db.execute(sql`CREATE TABLE kit_drizzle (k int PRIMARY KEY, text text)`);
    const resp = { model: 'claude-sonnet-4', usage: { input_tokens: 200, output_tokens: 50 } };
    await queryFor(() => db.insert(answers).values({ k: 1, text: "a%b 'q'" }), subject, { tags: sluice.usage(resp) });
    const rows = await queryFor(db.select({ text: answers.text }).from(answers).where(eq(answers.k, 1)), subject,
      { model: 'gpt-4o' });
    assert.deepStrictEqual(rows, [{ text: "a%b 'q'" }]);
    // a transaction: every statement of it carries the tags (BEGIN and COMMIT included)
    await sluice.tagged({ ai_user: subject, ai_model: 'gpt-4o' }, () => db.transaction(async (tx) => {
      await tx.update(answers).set({ text: 'b' }).where(eq(answers.k, 1));
    }));
    await db.select().from(answers);        // outside: charged to nobody
    const usage = await usageOf(subject);
    assert.deepStrictEqual(usage.map((u) => u.model), ['claude-sonnet-4', 'gpt-4o'], JSON.stringify(usage));
    assert.strictEqual(usage[0].requests, 1, JSON.stringify(usage));
    assert.ok(usage[1].requests >= 2, JSON.stringify(usage));
    await db.execute(sql`DROP TABLE kit_drizzle`);
  } finally {
    await pool.end();
  }
});

test('drizzle: queryFor waits out a rate-limit refusal', live, async () => {
  const { drizzle, sql } = drizzleOrm;
  const { tagging, queryFor } = require('../drizzle');
  const pool = new pg.Pool({ connectionString: process.env.DATABASE_URL, max: 1 });
  const db = drizzle(tagging(pool));
  try {
    const refused = await exhaust(pool);
    assert.strictEqual(refused && refused.code, '53400');
    const waits = [];
    const result = await queryFor(() => db.execute(sql`SELECT ${41}::int + 1 AS n`), 'limited', {
      maxWait: 120, sleep: timePasses(waits),
    });
    assert.deepStrictEqual(result.rows, [{ n: 42 }]);
    assert.ok(waits.length >= 1 && waits[0] > 0, JSON.stringify(waits));
  } finally {
    await setLimit(20);
    await pool.end();
  }
});
