-- SPDX-License-Identifier: PostgreSQL
-- scripts/lib/model_prices.sql - a starter sluice.model_prices for scripts/quickstart,
-- so that usage rows of common models carry a cost instead of NULL.
--
-- US dollars per million tokens, standard (not batch, not cached-input) API
-- list prices as published on the vendors' pricing pages in 2025:
--   OpenAI     https://openai.com/api/pricing/
--   Anthropic  https://www.anthropic.com/pricing#api
--   Google     https://ai.google.dev/gemini-api/docs/pricing (prompts up to 200k tokens)
-- Prices change: check them against those pages and update your own rows
-- (UPDATE sluice.model_prices ...). Rows already in the table are kept, so
-- running this again never overwrites a price you set.
INSERT INTO sluice.model_prices (model, input_usd_per_mtok, output_usd_per_mtok) VALUES
    ('gpt-5',              1.25,  10.00),
    ('gpt-5-mini',         0.25,   2.00),
    ('gpt-5-nano',         0.05,   0.40),
    ('gpt-4.1',            2.00,   8.00),
    ('gpt-4.1-mini',       0.40,   1.60),
    ('gpt-4.1-nano',       0.10,   0.40),
    ('gpt-4o',             2.50,  10.00),
    ('gpt-4o-mini',        0.15,   0.60),
    ('o3',                 2.00,   8.00),
    ('o4-mini',            1.10,   4.40),
    ('claude-opus-4-1',   15.00,  75.00),
    ('claude-sonnet-4-5',  3.00,  15.00),
    ('claude-sonnet-4',    3.00,  15.00),
    ('claude-haiku-4-5',   1.00,   5.00),
    ('claude-3-5-haiku',   0.80,   4.00),
    ('gemini-2.5-pro',     1.25,  10.00),
    ('gemini-2.5-flash',   0.30,   2.50),
    ('gemini-2.0-flash',   0.10,   0.40)
ON CONFLICT (model) DO NOTHING;
