// SPDX-License-Identifier: PostgreSQL
'use strict';
// pgsluice-kit/knex - pgsluice's tags on knex queries (knex with the pg client).
//
//   const { tagging, queryFor } = require('pgsluice-kit/knex');
//   const knex = require('knex')(tagging({ client: 'pg', connection: process.env.DATABASE_URL }));
//   const rows = await queryFor(knex('answers').where({ k }), user, { model: 'gpt-4o' });
//   await queryFor(knex('answers').insert({ k, text }), user, { tags: sluice.usage(resp) });
//
// knex's own .comment() is written for SELECT only, so the tags go on at the driver:
// tagging(config) hooks each connection knex opens (pool.afterCreate) so that its
// statements carry the tags of the running queryFor()/tagged() call (none outside one).
const sluice = require('./index.js');

/**
 * A copy of the knex config whose connections append the current tags to every statement
 * (an afterCreate hook, after the config's own afterCreate if it has one).
 */
function tagging(config) {
  const pool = { ...(config.pool || {}) };
  const own = pool.afterCreate;
  pool.afterCreate = (conn, done) => {
    const query = conn.query.bind(conn);
    conn.query = (queryConfig, ...rest) => query(sluice.tagConfig(queryConfig), ...rest);
    if (own) own(conn, done); else done(null, conn);
  };
  return { ...config, pool };
}

/**
 * Run a knex query builder (or a function returning one) on a tagging() knex, tagged
 * ai_user=user (opts.model: ai_model; opts.tags: more tags), again after a 53400 refusal's
 * HINT time (opts.attempts, 3; opts.maxWait s, 60; opts.sleep(ms)). Resolves to its result.
 * Not for a builder inside a transaction (retry the whole transaction instead).
 */
function queryFor(builder, user, opts = {}) {
  // a knex builder runs again each time it is awaited: a retry sends the statement again
  return sluice.runFor(typeof builder === 'function' ? builder : () => builder, user, opts);
}

module.exports = { tagging, queryFor, tagged: sluice.tagged };
