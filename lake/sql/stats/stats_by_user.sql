-- stats_by_user: each user's share of the lake (NULL: messages without a user id), most active first:
-- one user holding much of the data skews a training set (see snapshot.max_user_share).
CREATE OR REPLACE VIEW stats_by_user AS
SELECT user_id,
       count(DISTINCT conversation_id) AS conversations,
       count(*) AS messages,
       count(*) / sum(count(*)) OVER () AS message_share,
       sum(chars)::BIGINT AS chars,
       min(occurred_at) AS first_at,
       max(occurred_at) AS last_at,
       sum(thumbs_up)::BIGINT AS thumbs_up,
       sum(thumbs_down)::BIGINT AS thumbs_down
FROM clean_messages
GROUP BY user_id
ORDER BY messages DESC, user_id;
