-- turns: each assistant reply with the user prompt right before it and the messages before that
-- (context, a list of {role, content} in order). The unit of single-turn training formats.
CREATE OR REPLACE VIEW turns AS
SELECT conversation_id, message_id AS reply_id, turn_index, user_id, model, occurred_at,
       prompt, reply, coalesce(context, []) AS context
FROM (
    SELECT *,
           lag(role) OVER w AS prev_role,
           lag(content) OVER w AS prompt,
           content AS reply,
           list({'role': role, 'content': content}) OVER (
               PARTITION BY conversation_id ORDER BY turn_index
               ROWS BETWEEN UNBOUNDED PRECEDING AND 2 PRECEDING) AS context
    FROM messages
    WINDOW w AS (PARTITION BY conversation_id ORDER BY turn_index)
)
WHERE role = 'assistant' AND prev_role = 'user';
