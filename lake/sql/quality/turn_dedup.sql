-- turn_dedup: exact duplicates at the turn level. A turn is an assistant reply with the user message right
-- before it (as in the turns view); `turn_hash` combines the two normalised content hashes, and the first
-- turn (earliest reply, then id) with a hash is kept while the others point at its reply_id.
CREATE OR REPLACE VIEW turn_dedup AS
WITH pairs AS (
    SELECT conversation_id, message_id AS reply_id, turn_index, occurred_at, role,
           lag(role) OVER w AS prompt_role,
           hash(lag(content_hash) OVER w, content_hash) AS turn_hash
    FROM clean_messages
    WINDOW w AS (PARTITION BY conversation_id ORDER BY turn_index, message_id)
),
ranked AS (
    SELECT conversation_id, reply_id, turn_index, turn_hash,
           first_value(reply_id) OVER (PARTITION BY turn_hash ORDER BY occurred_at, reply_id) AS first_id
    FROM pairs
    WHERE role = 'assistant' AND prompt_role = 'user'
)
SELECT conversation_id, reply_id, turn_index, turn_hash,
       nullif(first_id, reply_id) AS duplicate_of,
       first_id <> reply_id AS is_duplicate
FROM ranked;
