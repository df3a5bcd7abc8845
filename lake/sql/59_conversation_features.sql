-- conversation_features: one row per conversation with what quality, dedup and snapshots judge it by.
--
-- Merged from conversation_partials (about one row per conversation and data file), so its cost follows the
-- number of conversations, not of messages and shingles. A conversation in one partial (most of them) takes
-- it as it is; the others merge: sums and counts add up, min/max/bool_or/bit_xor combine, lists are united and
-- sorted, the signatures keep the smallest hash of each bin (and get their band keys anew), and the sequence
-- facts are taken anew from the merged sequence (as conversation_sequences merges it).
--   content_hash    combines (turn_index, role, normalised content hash) of every message (an XOR of their
--                   hashes: order-free to compute, while the turn index keeps the order): equal for
--                   conversations in which the same roles say the same things at the same turns, whatever
--                   their ids, users and times
--   models, sources the distinct models (of replies) and sources, sorted
--   shingles        word 3-shingles of all its messages (near-duplicate detection needs enough of them)
--   shortest_reply  characters of its shortest assistant message (quality compares it with the config)
--   signature       MinHash signature: the smallest sampled shingle hash of each non-empty bin, in bin order
--   bands           its LSH band keys (signature_bands): what near_duplicates joins on
--   fingerprint, last_reply, reply_positions   of its sequence (sequence_facts in conversation_partials_of)
--   feedback        'negative' / 'positive' / 'none' (feedback_verdict, as in the conversations view)
CREATE OR REPLACE VIEW conversation_features AS
WITH partials AS NOT MATERIALIZED (SELECT * FROM conversation_partials),  -- bound once: each mention of a view binds its whole tree
spread AS (
    SELECT conversation_id FROM partials GROUP BY conversation_id HAVING count(*) > 1
),
spread_merged AS (
    SELECT * EXCLUDE (hashes, sequence), nullif(bin_minima(hashes), []) AS signature, unnest(sequence_facts(sequence))
    FROM (
        SELECT conversation_id,
               sum(messages)::BIGINT AS messages,
               sum(replies)::BIGINT AS replies,
               min(first_at) AS first_at,
               max(last_at) AS last_at,
               min(user_id) AS user_id,
               list_sort(list_distinct(flatten(list(models)))) AS models,
               list_sort(list_distinct(flatten(list(sources)))) AS sources,
               sum(chars)::BIGINT AS chars,
               sum(shingles)::BIGINT AS shingles,
               min(shortest_reply) AS shortest_reply,
               max(repetition) AS repetition,
               min(text_ratio) AS text_ratio,
               bool_or(refusal) AS refusal,
               bool_or(error_reply) AS error_reply,
               bit_xor(content_hash) AS content_hash,
               list_sort(flatten(list(sequence))) AS sequence,
               list_sort(flatten(list(signature))) AS hashes
        FROM partials SEMI JOIN spread USING (conversation_id)
        GROUP BY conversation_id
    )
),
merged AS (
    SELECT * EXCLUDE (sequence) FROM partials ANTI JOIN spread USING (conversation_id)
    UNION ALL BY NAME
    SELECT m.*, b.bands FROM spread_merged m LEFT JOIN signature_bands(spread_merged) b USING (conversation_id)
),
-- feedback on a message counts for the conversation that holds the message's latest state: for a merged
-- conversation that is the one event stored with its message_id
message_ids AS (
    SELECT conversation_id, message_id FROM raw_events
    ANTI JOIN conversation_exceptions USING (conversation_id)
    WHERE event_type = 'message'
    UNION ALL
    SELECT conversation_id, message_id FROM conversation_exception_messages
),
given AS MATERIALIZED (  -- read once (the events view checks every event id)
    SELECT conversation_id, message_id, rating, score FROM feedback
),
message_feedback AS (
    SELECT m.conversation_id,
           count(*) FILTER (WHERE f.rating = 1) AS thumbs_up,
           count(*) FILTER (WHERE f.rating = -1) AS thumbs_down,
           NULL::DOUBLE AS mean_score
    FROM given f JOIN message_ids m USING (message_id)
    GROUP BY m.conversation_id
),
conversation_feedback AS (
    SELECT conversation_id,
           count(*) FILTER (WHERE rating = 1) AS thumbs_up,
           count(*) FILTER (WHERE rating = -1) AS thumbs_down,
           avg(score) AS mean_score
    FROM given WHERE message_id IS NULL
    GROUP BY conversation_id
),
verdicts AS MATERIALIZED (  -- of the conversations with feedback
    SELECT conversation_id, feedback_verdict(sum(thumbs_up), sum(thumbs_down), max(mean_score)) AS feedback
    FROM (SELECT * FROM message_feedback UNION ALL SELECT * FROM conversation_feedback)
    GROUP BY conversation_id
)
SELECT p.conversation_id, p.messages, p.replies, p.first_at, p.last_at, p.user_id, p.models, p.sources, p.chars,
       p.shingles, p.shortest_reply, coalesce(p.repetition, 0) AS repetition, p.text_ratio, p.refusal,
       p.error_reply, p.content_hash, p.signature, p.bands, p.fingerprint, p.last_reply, p.reply_positions,
       -- looked up (feedback_verdict's two verdicts besides 'none'), not joined: a join built its hash table
       -- of the conversations' wide rows (sequences, signatures), 0.47 of 0.84 s for 168k conversations,
       -- while IN builds one of the few conversations with feedback
       CASE WHEN p.conversation_id IN (SELECT conversation_id FROM verdicts WHERE feedback = 'negative') THEN 'negative'
            WHEN p.conversation_id IN (SELECT conversation_id FROM verdicts WHERE feedback = 'positive') THEN 'positive'
            ELSE feedback_verdict(0, 0, NULL) END AS feedback
FROM merged p;
