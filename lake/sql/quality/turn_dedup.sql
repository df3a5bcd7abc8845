-- turn_dedup: exact duplicates at the turn level. A turn is a user message, the agent's steps after it (tool
-- calls and results) and the assistant reply they lead to, as in the turns view (exchanges_of); `turn_hash`
-- combines the normalised content hashes of the prompt, the steps (which cover the calls) and the reply, and
-- the first turn (earliest reply, then id) with a hash is kept while the others point at its reply_id.
CREATE OR REPLACE VIEW turn_dedup AS
WITH exchanges AS (
    SELECT conversation_id, message_id, turn_index, occurred_at, role, content_hash, is_step, exchange
    FROM exchanges_of('clean_messages')
),
steps AS (  -- the steps of each exchange that has any
    SELECT conversation_id, exchange, list(content_hash ORDER BY turn_index, message_id) AS step_hashes
    FROM exchanges
    WHERE is_step
    GROUP BY conversation_id, exchange
),
pairs AS (
    SELECT conversation_id, message_id AS reply_id, turn_index, occurred_at, role, exchange, content_hash,
           lag(role) OVER w AS prompt_role,
           lag(content_hash) OVER w AS prompt_hash
    FROM exchanges
    WHERE NOT is_step
    WINDOW w AS (PARTITION BY conversation_id ORDER BY turn_index, message_id)
),
hashed AS (
    SELECT p.conversation_id, p.reply_id, p.turn_index, p.occurred_at,
           CASE WHEN s.step_hashes IS NULL THEN hash(p.prompt_hash, p.content_hash)
                ELSE hash(p.prompt_hash, s.step_hashes, p.content_hash) END AS turn_hash
    FROM pairs p
    LEFT JOIN steps s ON s.conversation_id = p.conversation_id AND s.exchange = p.exchange - 1
    WHERE p.role = 'assistant' AND p.prompt_role = 'user'
),
ranked AS (
    SELECT *, first_value(reply_id) OVER (PARTITION BY turn_hash ORDER BY occurred_at, reply_id) AS first_id
    FROM hashed
)
SELECT conversation_id, reply_id, turn_index, turn_hash,
       nullif(first_id, reply_id) AS duplicate_of,
       first_id <> reply_id AS is_duplicate
FROM ranked;
