-- snapshot_positions: where each cleaned message sits in its conversation (`position`, 1-based, in turn
-- order), without its text. Structure, fingerprints and examples are worked out on these; the text is read
-- once, for the conversations a snapshot actually renders.
CREATE OR REPLACE TEMP TABLE snapshot_positions AS
SELECT conversation_id, event_id, role, model, source, user_id,
       row_number() OVER (PARTITION BY conversation_id ORDER BY turn_index, message_id)::INTEGER AS position
FROM clean_messages;
