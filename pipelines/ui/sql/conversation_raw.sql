-- conversation_raw: one conversation's messages in order as they were logged, with the feedback comments
-- and the metadata (where the proxy keeps a reply's reasoning): what the raw-text toggle shows.
SELECT message_id, turn_index, role, content, model, occurred_at, source, thumbs_up, thumbs_down,
       comments, metadata
FROM messages
WHERE conversation_id = $conversation
ORDER BY turn_index, occurred_at;
