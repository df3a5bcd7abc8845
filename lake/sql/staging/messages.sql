-- messages: the latest state of each message (a later event with the same message_id is a correction),
-- with the feedback given on it.
CREATE OR REPLACE VIEW messages AS
WITH message_events AS (
    SELECT * FROM events WHERE event_type = 'message'
),
corrected AS (
    SELECT message_id FROM message_events GROUP BY message_id HAVING count(*) > 1
),
latest AS (
    SELECT * FROM message_events WHERE message_id NOT IN (SELECT message_id FROM corrected)
    UNION ALL
    SELECT * FROM (
        SELECT * FROM message_events WHERE message_id IN (SELECT message_id FROM corrected)
        QUALIFY row_number() OVER (PARTITION BY message_id ORDER BY occurred_at DESC, event_id DESC) = 1
    )
),
message_feedback AS (
    SELECT message_id,
           count(*) FILTER (WHERE rating = 1) AS thumbs_up,
           count(*) FILTER (WHERE rating = -1) AS thumbs_down,
           avg(score) AS mean_score,
           list(comment ORDER BY occurred_at) FILTER (WHERE comment IS NOT NULL) AS comments
    FROM feedback WHERE message_id IS NOT NULL
    GROUP BY message_id
)
SELECT m.event_id, m.conversation_id, m.message_id, m.turn_index, m.role, m.content, m.model,
       m.user_id, m.source, m.occurred_at, m.ingested_at,
       m.prompt_tokens, m.completion_tokens, m.latency_ms, m.metadata,
       m.reasoning, m.tool_calls, m.tool_call_id, m.tool_name, m.attachments, m.tools,
       coalesce(f.thumbs_up, 0) AS thumbs_up, coalesce(f.thumbs_down, 0) AS thumbs_down,
       f.mean_score, f.comments
FROM latest m LEFT JOIN message_feedback f USING (message_id);
