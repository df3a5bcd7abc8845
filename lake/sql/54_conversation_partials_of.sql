-- conversation_partials_of(messages): one row per conversation of a relation of message rows (the name of a
-- table or view with clean_messages' columns), holding what conversation_features needs from them in a form
-- that merges. A conversation whose messages are spread over several relations (Delta data files) has one
-- row in each, and conversation_features merging them (sums, counts, min, max, bool_or, bit_xor, the union
-- of the lists, the bin-wise minimum of the signatures) gets what one pass over all its messages would.
--
-- lake/views.py caches it per Delta data file beside the message features (a data file never changes), so
-- conversation_features reads about one row per conversation instead of every message and every shingle.
-- It holds ids, counts and hashes, no text. Configured thresholds are applied after merging (quality reads
-- shortest_reply, not a count of replies under min_assistant_chars); only the signature's number of bins
-- (dedup.minhash_permutations) and of bins per band (with dedup.minhash_bands) are built in, and they are
-- part of the cache's fingerprint.
--
-- Columns beyond conversation_features' scalar ones:
--   sequence    the messages in turn order (turn_index, then message_id) as {turn_index, message_id,
--               event_id, role}: their positions, and what the snapshot fingerprints and renders
--   signature   the MinHash signature by one-permutation hashing: each sampled shingle hash (1 in 4, see
--               message_features_of) falls into one of `dedup.minhash_permutations` bins by its top bits
--               (x >> dedup_bin_shift); the smallest hash of each non-empty bin, in order (so in bin order;
--               a hash names its bin). NULL: no sampled shingle
--   bands       the signature's LSH band keys (signature_bands): what near_duplicates joins on
--   events_hash_high, events_hash_low   the XOR of the md5 of its message events' ids, in two 64-bit halves
--               (Parquet has no 128-bit integer): merges by XOR, and equal sets of events have equal hashes
--               (conversation_features' fingerprint)
--   last_reply, reply_positions   its sequence's positions (sequence_positions), with first_key / last_key
--               ({turn_index, message_id} of its first and last message) and first_role / last_role, so that
--               conversation_features merges positions without reading the sequences
-- bin_minima(hashes): the MinHash signature of sorted hashes. Sorted, the hashes of a bin are adjacent (a
-- hash's top bits, x >> dedup_bin_shift, are its bin), the smallest first: the first of each run is that
-- bin's minimum. List work, not a GROUP BY over every hash. The partials build their signatures with it, and
-- conversation_features the signatures of conversations merged from several partials.
CREATE OR REPLACE MACRO bin_minima(hashes) AS
    list_filter(hashes, lambda x, i: i = 1 OR x >> getvariable('dedup_bin_shift')
                                              <> hashes[i - 1] >> getvariable('dedup_bin_shift'));

-- list_in_order(values, keys): an aggregate, the values of a group as a list in the order of their keys (unique
-- within a group). Both lists are built from the same rows in the same order, so sorting the keys' small
-- list afterwards (list_grade_up) orders the values; an ordered aggregate (list(values ORDER BY keys)) costs
-- far more: in snapshot_canonical it took 1.6 of the step's 2.6 s for 144k conversations.
CREATE OR REPLACE MACRO list_in_order(values, keys) AS list_select(list(values), list_grade_up(list(keys)));

-- signature_bands(signatures): the LSH band keys of each row of a relation with (conversation_id,
-- signature): the bins are cut into bands of `dedup_band_rows` bins, and a non-empty band's key hashes the
-- band's number and its hashes (their XOR and number), so two signatures with the same hashes in every bin
-- of a band share a key, and keys of different bands differ. A list in band order; NULL for no signature.
-- Computed with the partials (cached per data file) and for merged signatures in conversation_features, so
-- dedup joins on one integer key instead of grouping every hash of every signature.
CREATE OR REPLACE MACRO signature_bands(signatures) AS TABLE
SELECT conversation_id, list_in_order(key, band) AS bands
FROM (
    SELECT conversation_id, (x >> getvariable('dedup_bin_shift'))::INTEGER // getvariable('dedup_band_rows') AS band,
           hash(band, bit_xor(x), count(*)) AS key
    FROM (SELECT conversation_id, unnest(signature) AS x FROM query_table(signatures))
    GROUP BY conversation_id, band
)
GROUP BY conversation_id;

-- sequence_positions(sequence): the positions (1-based, in turn order) that a snapshot needs of a sequence:
--   last_reply       of its last assistant message; NULL: none
--   reply_positions  of the assistant messages that directly follow a user message (the single-turn formats'
--                    examples)
CREATE OR REPLACE MACRO sequence_positions(sequence) AS {
    'last_reply': (len(sequence) + 1 - list_position(list_reverse(list_transform(sequence, lambda m: m.role)), 'assistant'))::INTEGER,
    'reply_positions': list_filter(range(2, len(sequence) + 1),
                                   lambda i: sequence[i].role = 'assistant' AND sequence[i - 1].role = 'user')::INTEGER[]
};

-- events_fingerprint(high, low): the events hash as 32 hex digits, as the snapshot records it
CREATE OR REPLACE MACRO events_fingerprint(high, low) AS lpad(lower(hex(high)), 16, '0') || lpad(lower(hex(low)), 16, '0');

CREATE OR REPLACE MACRO conversation_partials_of(messages) AS TABLE
WITH aggregated AS (
    SELECT m.conversation_id,
           count(*) AS messages,
           count(*) FILTER (WHERE m.role = 'assistant') AS replies,
           min(m.occurred_at) AS first_at,
           max(m.occurred_at) AS last_at,
           min(m.user_id) AS user_id,
           list_sort(list_distinct(list(m.model))) AS models,
           list_sort(list_distinct(list(m.source))) AS sources,
           sum(m.chars)::BIGINT AS chars,
           sum(m.shingles)::BIGINT AS shingles,
           min(m.chars) FILTER (WHERE m.role = 'assistant') AS shortest_reply,
           max(m.repetition) AS repetition,
           min(m.text_chars / m.chars) FILTER (WHERE m.chars >= 20) AS text_ratio,
           bool_or(m.is_refusal) AS refusal,
           bool_or(m.is_error) AS error_reply,
           bit_xor(hash(m.turn_index, m.role, m.content_hash)) AS content_hash,
           -- one md5 per event, split (md5_number_upper and _lower took four times as long; bit_xor of a
           -- UHUGEINT thirty times)
           bit_xor((m.event_md5 >> 64)::UBIGINT) AS events_hash_high,
           bit_xor((m.event_md5 & 18446744073709551615::UHUGEINT)::UBIGINT) AS events_hash_low,
           list_sort(list({'turn_index': m.turn_index, 'message_id': m.message_id, 'event_id': m.event_id,
                           'role': m.role})) AS sequence,
           list_sort(flatten(list(m.shingle_sample))) AS sample
    FROM (SELECT *, md5_number(event_id) AS event_md5 FROM query_table(messages)) m
    GROUP BY m.conversation_id
),
signed AS MATERIALIZED (  -- read twice: the rows, and signature_bands()
    SELECT * EXCLUDE (sample), CASE WHEN len(sample) > 0 THEN bin_minima(sample) END AS signature,
           unnest(sequence_positions(sequence)),
           {'turn_index': sequence[1].turn_index, 'message_id': sequence[1].message_id} AS first_key,
           {'turn_index': sequence[-1].turn_index, 'message_id': sequence[-1].message_id} AS last_key,
           sequence[1].role AS first_role, sequence[-1].role AS last_role
    FROM aggregated
)
SELECT s.*, b.bands
FROM signed s LEFT JOIN signature_bands(signed) b USING (conversation_id);
