-- conversation: one conversation's messages in order, redacted, to read as a chat (the thumbs come with
-- clean_messages; comments and metadata are free-form, uncleaned text, so only conversation_raw shows them).
SELECT message_id, turn_index, role, content, model, occurred_at, source, thumbs_up, thumbs_down,
       NULL::VARCHAR[] AS comments, NULL::VARCHAR AS metadata
FROM clean_messages
WHERE conversation_id = $conversation
ORDER BY turn_index, occurred_at;
