-- conversation_features: one row per conversation with what quality, dedup and snapshots judge it by.
--
-- Merged from conversation_partials (about one row per conversation and data file), so its cost follows the
-- number of conversations, not of messages and shingles. A conversation in one partial (most of them) takes
-- it as it is; the others merge: sums and counts add up, min/max/bool_or/bit_xor combine, lists are united and
-- sorted, the signatures keep the smallest hash of each bin (and get their band keys anew). Positions merge
-- without the sequences: in turn order, each partial's positions shift by the messages of the partials
-- before it (and a reply that opens a partial after a user message that closed the previous one is a
-- reply position too). Only a conversation whose partials interleave in turn order (messages delivered out
-- of order) has its positions taken from its merged sequence.
--   content_hash    combines (turn_index, role, normalised content hash) of every message (an XOR of their
--                   hashes: order-free to compute, while the turn index keeps the order): equal for
--                   conversations in which the same roles say the same things at the same turns, whatever
--                   their ids, users and times
--   models, sources the distinct models (of replies) and sources, sorted
--   shingles        word 3-shingles of all its messages (near-duplicate detection needs enough of them)
--   shortest_reply  characters of its shortest assistant message that calls no tool (quality compares it with
--                   the config; a reply that calls tools is a step toward the answer, and may have no text)
--   tool_calls      the tool calls its replies make
--   unanswered_tool_calls   those left without a result: no later tool message names the call's id, or, for
--                   a call without an id (Ollama's, the legacy function_call), the first message after its
--                   reply that is not a system message is not a tool result. Computed for the conversations
--                   that call tools only; a call without an id is judged on the conversation's merged sequence
--   signature       MinHash signature: the smallest sampled shingle hash of each non-empty bin, in bin order
--   bands           its LSH band keys (signature_bands): what near_duplicates joins on
--   fingerprint     of its message events (events_fingerprint): an unchanged one means unchanged messages
--   last_reply, reply_positions   positions in its sequence (sequence_positions; conversation_sequences)
--   feedback        'negative' / 'positive' / 'none' (feedback_verdict, as in the conversations view)
CREATE OR REPLACE VIEW conversation_features AS
WITH all_partials AS NOT MATERIALIZED (  -- bound once: each mention of a view binds its whole tree
    SELECT * FROM conversation_partials
),
partials AS MATERIALIZED (  -- read once
    SELECT * EXCLUDE (sequence) FROM all_partials
),
spread AS (
    SELECT conversation_id FROM partials GROUP BY conversation_id HAVING count(*) > 1
),
-- the partials of the conversations in more than one, in turn order, with the number of messages before each
spread_parts AS (
    SELECT *,
           coalesce(sum(messages) OVER earlier, 0)::INTEGER AS shift,
           lag(last_key) OVER in_order AS previous_last_key,
           lag(last_role) OVER in_order AS previous_last_role
    FROM partials SEMI JOIN spread USING (conversation_id)
    WINDOW in_order AS (PARTITION BY conversation_id ORDER BY first_key),
           earlier AS (in_order ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
),
spread_merged AS (
    SELECT * EXCLUDE (hashes), nullif(bin_minima(hashes), []) AS signature
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
               bit_xor(events_hash_high) AS events_hash_high,
               bit_xor(events_hash_low) AS events_hash_low,
               max(shift + last_reply) AS last_reply,
               list_sort(flatten(list(
                   list_transform(reply_positions, lambda i: i + shift)
                   || CASE WHEN first_role = 'assistant' AND previous_last_role = 'user' THEN [shift + 1] ELSE [] END
               ))) AS reply_positions,
               bool_or(previous_last_key >= first_key) AS interleaved,
               list_sort(flatten(list(signature))) AS hashes
        FROM spread_parts
        GROUP BY conversation_id
    )
),
interleaved AS (  -- rare: positions from the merged sequence
    SELECT conversation_id, unnest(sequence_positions(sequence))
    FROM (SELECT conversation_id, list_sort(flatten(list(sequence))) AS sequence
          FROM all_partials
          WHERE conversation_id IN (SELECT conversation_id FROM spread_merged WHERE interleaved)
          GROUP BY conversation_id)
),
merged AS (
    SELECT * FROM partials ANTI JOIN spread USING (conversation_id)
    UNION ALL BY NAME
    SELECT m.* EXCLUDE (last_reply, reply_positions, interleaved),
           CASE WHEN m.interleaved THEN i.last_reply ELSE m.last_reply END AS last_reply,
           CASE WHEN m.interleaved THEN i.reply_positions ELSE m.reply_positions END AS reply_positions,
           b.bands
    FROM spread_merged m
    LEFT JOIN interleaved i USING (conversation_id)
    LEFT JOIN signature_bands(spread_merged) b USING (conversation_id)
),
called AS (  -- the conversations that call tools (few), each call with the ids of the results after it
    SELECT conversation_id, c,
           list_transform(list_filter(results, lambda r: r.turn_index > c.turn_index
                                                 OR (r.turn_index = c.turn_index AND r.message_id > c.message_id)),
                          lambda r: r.id) AS later_results
    FROM (SELECT conversation_id, unnest(calls) AS c, results
          FROM (SELECT conversation_id, flatten(list(calls)) AS calls, flatten(list(results)) AS results
                FROM partials
                WHERE conversation_id IN (SELECT conversation_id FROM partials WHERE len(calls) > 0)
                GROUP BY conversation_id))
),
unnamed_sequences AS (  -- the sequences of those with a call without an id (positions decide for those)
    SELECT conversation_id, list_sort(flatten(list(sequence))) AS sequence
    FROM all_partials
    WHERE conversation_id IN (SELECT conversation_id FROM called WHERE c.id IS NULL)
    GROUP BY conversation_id
),
unanswered AS (
    SELECT conversation_id, count(*) AS tool_calls,
           count(*) FILTER (WHERE CASE WHEN c.id IS NOT NULL THEN NOT list_contains(later_results, c.id)
                                       ELSE coalesce(list_filter(s.sequence[list_position(list_transform(s.sequence,
                                                                                                         lambda m: m.message_id),
                                                                                          c.message_id) + 1:],
                                                                 lambda m: m.role <> 'system')[1].role <> 'tool', true)
                                       END) AS unanswered_tool_calls
    FROM called LEFT JOIN unnamed_sequences s USING (conversation_id)
    GROUP BY conversation_id
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
       p.error_reply, coalesce(u.tool_calls, 0) AS tool_calls, coalesce(u.unanswered_tool_calls, 0) AS unanswered_tool_calls,
       p.content_hash, p.signature, p.bands, events_fingerprint(p.events_hash_high, p.events_hash_low) AS fingerprint,
       p.last_reply, p.reply_positions,
       -- looked up (feedback_verdict's two verdicts besides 'none'), not joined: a join built its hash table
       -- of the conversations' wide rows (sequences, signatures), 0.47 of 0.84 s for 168k conversations,
       -- while IN builds one of the few conversations with feedback
       CASE WHEN p.conversation_id IN (SELECT conversation_id FROM verdicts WHERE feedback = 'negative') THEN 'negative'
            WHEN p.conversation_id IN (SELECT conversation_id FROM verdicts WHERE feedback = 'positive') THEN 'positive'
            ELSE feedback_verdict(0, 0, NULL) END AS feedback
FROM merged p
LEFT JOIN unanswered u USING (conversation_id);
