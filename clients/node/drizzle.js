// SPDX-License-Identifier: PostgreSQL
'use strict';
// pgsluice-kit/drizzle - pgsluice's tags on drizzle-orm queries (node-postgres driver).
//
//   const { drizzle } = require('drizzle-orm/node-postgres');
//   const { tagging, queryFor } = require('pgsluice-kit/drizzle');
//   const db = drizzle(tagging(pool));            // a pool whose statements carry the current tags
//   const rows = await queryFor(() => db.select().from(answers).where(eq(answers.k, k)), user,
//     { model: 'gpt-4o' });
//
// drizzle has no comment hook of its own, so the tags go on at the driver: tagging(pool)
// appends the tags of the running queryFor()/tagged() call to every statement it sends
// (none outside one). Works for every drizzle query, relational queries and db.execute()
// included; a named prepared statement (.prepare('name')) is sent untagged.
const sluice = require('./index.js');

/**
 * Run query (a drizzle query, or a function returning one: built anew on each try) tagged
 * ai_user=user (opts.model: ai_model; opts.tags: more tags) through a tagging() pool, again
 * after a 53400 refusal's HINT time (opts.attempts, 3; opts.maxWait s, 60; opts.sleep(ms)).
 * Resolves to the query's result. Not inside a transaction (retry the transaction instead).
 */
function queryFor(query, user, opts = {}) {
  const run = typeof query === 'function' ? query : () => query.then((result) => result);
  return sluice.runFor(run, user, opts);
}

module.exports = { tagging: sluice.tagging, tagged: sluice.tagged, queryFor };
