-- conversations: one row per conversation, with its turns, times, models, user and feedback summary.
CREATE OR REPLACE VIEW conversations AS
WITH per_conversation AS (
    SELECT conversation_id,
           count(*) AS messages,
           count(*) FILTER (WHERE role = 'user') AS user_turns,
           count(*) FILTER (WHERE role = 'assistant') AS assistant_turns,
           min(occurred_at) AS first_at,
           max(occurred_at) AS last_at,
           list(DISTINCT model ORDER BY model) FILTER (WHERE model IS NOT NULL) AS models,
           list(DISTINCT source ORDER BY source) AS sources,
           min(user_id) AS user_id,
           sum(length(content))::BIGINT AS chars,
           sum(thumbs_up)::BIGINT AS message_thumbs_up,
           sum(thumbs_down)::BIGINT AS message_thumbs_down
    FROM messages
    GROUP BY conversation_id
),
conversation_feedback AS (
    SELECT conversation_id,
           count(*) FILTER (WHERE rating = 1) AS thumbs_up,
           count(*) FILTER (WHERE rating = -1) AS thumbs_down,
           avg(score) AS mean_score
    FROM feedback WHERE message_id IS NULL
    GROUP BY conversation_id
),
conversation_tags AS (
    SELECT conversation_id, list(DISTINCT tag ORDER BY tag) AS tags FROM tags GROUP BY conversation_id
)
SELECT p.conversation_id, p.messages, p.user_turns, p.assistant_turns, p.first_at, p.last_at,
       p.models, p.sources, p.user_id, p.chars,
       p.message_thumbs_up + coalesce(f.thumbs_up, 0) AS thumbs_up,
       p.message_thumbs_down + coalesce(f.thumbs_down, 0) AS thumbs_down,
       f.mean_score,
       feedback_verdict(p.message_thumbs_up + coalesce(f.thumbs_up, 0),
                        p.message_thumbs_down + coalesce(f.thumbs_down, 0), f.mean_score) AS feedback,
       coalesce(t.tags, []) AS tags
FROM per_conversation p
LEFT JOIN conversation_feedback f USING (conversation_id)
LEFT JOIN conversation_tags t USING (conversation_id);
