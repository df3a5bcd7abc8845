-- stats_daily: activity per day (UTC) of the message time: messages, conversations and users active that
-- day, replies, cleaned characters, redacted messages and the thumbs given on that day's messages.
CREATE OR REPLACE VIEW stats_daily AS
SELECT occurred_at::DATE AS day,
       count(*) AS messages,
       count(DISTINCT conversation_id) AS conversations,
       count(DISTINCT user_id) AS users,
       count(*) FILTER (WHERE role = 'assistant') AS replies,
       sum(chars)::BIGINT AS chars,
       count(*) FILTER (WHERE len(redaction_rules) > 0) AS redacted_messages,
       sum(thumbs_up)::BIGINT AS thumbs_up,
       sum(thumbs_down)::BIGINT AS thumbs_down
FROM clean_messages
GROUP BY day
ORDER BY day;
