-- conversation: one conversation's messages in order, redacted, to read as a chat: text, reasoning, tool calls
-- and the call a result answers (the thumbs come with clean_messages; comments are free-form, uncleaned text,
-- so only conversation_raw shows them).
SELECT message_id, turn_index, role, content, reasoning, tool_calls, tool_name, model, occurred_at, source,
       thumbs_up, thumbs_down, NULL::VARCHAR[] AS comments
FROM clean_messages
WHERE conversation_id = $conversation
ORDER BY turn_index, occurred_at;
