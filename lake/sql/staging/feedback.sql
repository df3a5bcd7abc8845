-- feedback: every rating, score or comment, on a message (message_id set) or a whole conversation.
CREATE OR REPLACE VIEW feedback AS
SELECT event_id, conversation_id, message_id, rating, score, comment, user_id, source, occurred_at
FROM events
WHERE event_type = 'feedback';
