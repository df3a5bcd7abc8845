-- conversation_raw: one conversation's messages in order as they were logged, with the feedback comments:
-- what the raw-text toggle shows.
SELECT message_id, turn_index, role, content, reasoning, tool_calls, tool_name, model, occurred_at, source,
       thumbs_up, thumbs_down, comments
FROM messages
WHERE conversation_id = $conversation
ORDER BY turn_index, occurred_at;
