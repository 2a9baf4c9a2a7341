// SPDX-License-Identifier: PostgreSQL
'use strict';
// pgsluice-kit - tags, attribution, LLM usage and rate-limit retries for
// applications behind pgsluice (docs/ai-middleware.md), for node-postgres.
//
//   const sluice = require('pgsluice-kit');
//   await pool.query(sluice.tag('INSERT INTO answers VALUES ($1)', { ai_user: user, ...sluice.usage(resp) }), [text]);
//   const { rows } = await sluice.queryFor(pool, user, 'SELECT answer FROM llm_cache WHERE k = $1', [key]);
//   await sluice.attribute(pool, user, 'gpt-4o', async (client) => client.query('SELECT ...'));
//
// No dependency: pool and client are node-postgres objects (anything with query()).
// ORMs: require('pgsluice-kit/knex') and require('pgsluice-kit/drizzle').

const RATE_LIMITED = '53400'; // configuration_limit_exceeded: a limit or budget refused it
const RETRY_AFTER = /Retry after ([0-9]+(?:\.[0-9]+)?) s/;
const KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;

// sqlcommenter value: percent-encoded, and ' too (encodeURIComponent leaves ' ! ( ) * alone)
const enc = (v) => encodeURIComponent(String(v)).replace(/[!'()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());

/** The sqlcommenter comment of tags: keys sorted, values URL-encoded; '' when none is set. */
function comment(tags) {
  const parts = [];
  for (const key of Object.keys(tags || {}).sort()) {
    const value = tags[key];
    if (value === undefined || value === null) continue;
    if (!KEY.test(key)) throw new Error(`invalid tag name ${JSON.stringify(key)}`);
    if (typeof value === 'boolean') throw new TypeError(`tag ${key} takes a string or a number, not a boolean`);
    parts.push(`${key}='${enc(value)}'`);
  }
  return parts.length ? `/*${parts.join(',')}*/` : '';
}

/** text with the comment of tags at its end (pgsluice reads the last comment). */
function tag(text, tags) {
  const c = comment(tags);
  return c ? `${text.trimEnd().replace(/;$/, '')} ${c}` : text;
}

/**
 * ai_model, ai_tokens_in, ai_tokens_out from an OpenAI (Chat Completions:
 * usage.prompt_tokens/completion_tokens; Responses: input_tokens/output_tokens)
 * or Anthropic Messages response (input_tokens/output_tokens, cache tokens
 * counted as input). Unknown values are left out.
 */
function usage(response) {
  const u = (response && response.usage) || {};
  let tokensIn = u.prompt_tokens;
  if (tokensIn === undefined || tokensIn === null) {
    tokensIn = u.input_tokens;
    if (tokensIn !== undefined && tokensIn !== null) {
      tokensIn += (u.cache_creation_input_tokens || 0) + (u.cache_read_input_tokens || 0);
    }
  }
  let tokensOut = u.completion_tokens;
  if (tokensOut === undefined || tokensOut === null) tokensOut = u.output_tokens;
  const out = {};
  if (response && response.model) out.ai_model = response.model;
  if (tokensIn !== undefined && tokensIn !== null) out.ai_tokens_in = tokensIn;
  if (tokensOut !== undefined && tokensOut !== null) out.ai_tokens_out = tokensOut;
  return out;
}

/**
 * Seconds a 53400 refusal asks to wait (HINT "Retry after N s."), else null. err is
 * node-postgres's error, or an ORM's error around it (drizzle's DrizzleQueryError: err.cause).
 */
function retryAfter(err) {
  if (err && err.code === undefined && err.cause) err = err.cause;
  if (!err || err.code !== RATE_LIMITED) return null;
  const m = RETRY_AFTER.exec(err.hint || '');
  return m ? parseFloat(m[1]) : null;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * pool.query(text tagged ai_user=user plus opts.tags, values), retried after a
 * 53400's HINT time (up to opts.attempts tries, 3; waits up to opts.maxWait s, 60).
 */
async function queryFor(pool, user, text, values, opts = {}) {
  const attempts = opts.attempts || 3;
  const maxWait = opts.maxWait === undefined ? 60 : opts.maxWait;
  const tagged = tag(text, { ...(opts.tags || {}), ai_user: user });
  for (let attempt = 1; ; attempt++) {
    try {
      return await pool.query(tagged, values);
    } catch (err) {
      const wait = retryAfter(err);
      if (wait === null || wait > maxWait || attempt >= attempts) throw err;
      await (opts.sleep || sleep)(wait * 1000);
    }
  }
}

const literal = (v) => {
  const s = String(v);
  if (s.includes('\0')) throw new Error('a subject or model cannot contain a NUL byte');
  return `'${s.replace(/'/g, "''")}'`;
};

/**
 * Run fn(client) on one client of pool with SET sluice.user (and sluice.model)
 * in force, so every statement of fn is charged to user; then RESET and
 * release. pgsluice answers these SETs itself (needs pgsluice).
 */
async function attribute(pool, user, model, fn) {
  const client = await pool.connect();
  try {
    await client.query(`SET sluice.user = ${literal(user)}`);
    if (model) await client.query(`SET sluice.model = ${literal(model)}`);
    return await fn(client);
  } finally {
    try {
      await client.query('RESET sluice.user');
      if (model) await client.query('RESET sluice.model');
      client.release();
    } catch (err) {
      client.release(err);
    }
  }
}

// The tags of the current tagged() call, carried across awaits (this async context only).
const { AsyncLocalStorage } = require('node:async_hooks');
const context = new AsyncLocalStorage();

/** The tags in force in this async context (a new object), {} outside any tagged() call. */
function currentTags() {
  return { ...(context.getStore() || {}) };
}

/**
 * Run fn() with tags added to (and overriding) those in force: every statement sent through
 * a tagging() pool or client while fn's promise runs carries them. Returns fn()'s result.
 */
function tagged(tags, fn) {
  // awaited inside run(): a thenable fn() returns (a query builder) runs when awaited, in the context
  return context.run({ ...currentTags(), ...tags }, async () => await fn());
}

// A query config (text or { text, ... }) with the current tags at the end of its text.
// Named prepared statements are left as they are: node-postgres refuses one name with two texts.
function tagConfig(config) {
  const tags = context.getStore();
  if (!tags) return config;
  if (typeof config === 'string') return tag(config, tags);
  if (config && typeof config.text === 'string' && !config.name && typeof config.submit !== 'function') {
    return { ...config, text: tag(config.text, tags) };
  }
  return config;
}

/**
 * A node-postgres Pool or Client whose query() appends the tags of the current tagged() call
 * (nothing outside one), and whose connect() gives tagging clients too. Still an instanceof
 * the original class (a Proxy): hand it to drizzle(), or use it as the pool itself.
 */
function tagging(target) {
  return new Proxy(target, {
    get(obj, prop) {
      if (prop === 'query') return (config, ...rest) => obj.query(tagConfig(config), ...rest);
      if (prop === 'connect' && typeof obj.release !== 'function' && typeof obj.totalCount === 'number') {
        // Pool.connect([callback]): wrap the client it gives out
        return (cb) => {
          if (typeof cb === 'function') return obj.connect((err, client, done) => cb(err, client && tagging(client), done));
          return obj.connect().then(tagging);
        };
      }
      const value = Reflect.get(obj, prop, obj);
      return typeof value === 'function' ? value.bind(obj) : value;
    },
  });
}

/**
 * Run fn() (which sends its statements and returns a promise, e.g. a query builder) inside
 * tagged({ai_user: user, ai_model: opts.model, ...opts.tags}), again after a 53400 refusal's
 * HINT time: up to opts.attempts tries (3), waits up to opts.maxWait s (60), opts.sleep(ms)
 * to wait. Not inside a transaction: retry the whole transaction instead.
 */
async function runFor(fn, user, opts = {}) {
  const attempts = opts.attempts || 3;
  const maxWait = opts.maxWait === undefined ? 60 : opts.maxWait;
  const tags = { ...(opts.tags || {}), ai_user: user };
  if (opts.model) tags.ai_model = opts.model;
  for (let attempt = 1; ; attempt++) {
    try {
      return await tagged(tags, fn);
    } catch (err) {
      const wait = retryAfter(err);
      if (wait === null || wait > maxWait || attempt >= attempts) throw err;
      await (opts.sleep || sleep)(wait * 1000);
    }
  }
}

module.exports = {
  comment, tag, usage, retryAfter, queryFor, attribute, tagged, tagging, tagConfig, currentTags, runFor,
  RATE_LIMITED,
};
