-- conversation_features: one row per conversation with what quality and dedup judge it by, aggregated from
-- its clean_messages in one pass.
--   content_hash    combines (turn_index, role, normalised content hash) of every message (an XOR of their
--                   hashes: order-free to compute, while the turn index keeps the order): equal for
--                   conversations in which the same roles say the same things at the same turns, whatever
--                   their ids, users and times
--   shingles        word 3-shingles of all its messages (near-duplicate detection needs enough of them)
--   feedback        'negative' / 'positive' / 'none', the same rule as the conversations view
CREATE OR REPLACE VIEW conversation_features AS
WITH per_conversation AS (
    SELECT m.conversation_id,
           count(*) AS messages,
           count(*) FILTER (WHERE m.role = 'assistant') AS replies,
           min(m.occurred_at) AS first_at,
           max(m.occurred_at) AS last_at,
           min(m.user_id) AS user_id,
           sum(m.chars)::BIGINT AS chars,
           sum(m.shingles)::BIGINT AS shingles,
           count(*) FILTER (WHERE m.role = 'assistant' AND m.chars < getvariable('quality_min_assistant_chars')) AS empty_replies,
           coalesce(max(m.repetition), 0) AS repetition,
           min(m.text_chars / m.chars) FILTER (WHERE m.chars >= 20) AS text_ratio,
           bool_or(m.is_refusal) AS refusal,
           bool_or(m.is_error) AS error_reply,
           sum(m.thumbs_up)::BIGINT AS message_thumbs_up,
           sum(m.thumbs_down)::BIGINT AS message_thumbs_down,
           bit_xor(hash(m.turn_index, m.role, m.content_hash)) AS content_hash
    FROM clean_messages m
    GROUP BY m.conversation_id
),
conversation_feedback AS (
    SELECT conversation_id,
           count(*) FILTER (WHERE rating = 1) AS thumbs_up,
           count(*) FILTER (WHERE rating = -1) AS thumbs_down,
           avg(score) AS mean_score
    FROM feedback WHERE message_id IS NULL
    GROUP BY conversation_id
)
SELECT p.* EXCLUDE (message_thumbs_up, message_thumbs_down),
       CASE WHEN p.message_thumbs_down + coalesce(f.thumbs_down, 0) > 0 THEN 'negative'
            WHEN p.message_thumbs_up + coalesce(f.thumbs_up, 0) > 0 OR f.mean_score >= 0.5 THEN 'positive'
            WHEN f.mean_score < 0.5 THEN 'negative'
            ELSE 'none' END AS feedback
FROM per_conversation p
LEFT JOIN conversation_feedback f USING (conversation_id);
