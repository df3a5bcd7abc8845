-- conversation: one conversation's messages in order, to read as a chat: {texts} is clean_messages
-- (redacted) or messages (raw); the feedback counts and comments come from messages either way.
SELECT t.message_id, t.turn_index, t.role, t.content, t.model, t.occurred_at, t.source,
       m.thumbs_up, m.thumbs_down, m.comments, m.metadata
FROM {texts} t
JOIN messages m USING (event_id)
WHERE t.conversation_id = $conversation
ORDER BY t.turn_index, t.occurred_at;
