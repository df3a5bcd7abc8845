-- snapshot_canonical: the rows of snapshot_render (conversation_id, ordinal, cut, and whatever else the caller
-- carries along) with their cleaned text: `messages`, a list of {content, role} in turn order up to
-- position `cut`. The only query that reads text; the cut becomes a turn index first, so the text side
-- needs no window. Unordered: every reader orders by `ordinal`.
CREATE OR REPLACE TEMP TABLE snapshot_canonical AS
WITH bounds AS (
    SELECT r.ordinal, r.conversation_id, p.turn_index AS last_turn, p.message_id AS last_message
    FROM snapshot_render r
    JOIN snapshot_positions p ON p.conversation_id = r.conversation_id AND p.position = r.cut
),
texts AS (
    SELECT b.ordinal,
           list({'content': m.content, 'role': m.role} ORDER BY m.turn_index, m.message_id) AS messages
    FROM bounds b
    JOIN clean_messages m ON m.conversation_id = b.conversation_id
     AND (m.turn_index < b.last_turn OR (m.turn_index = b.last_turn AND m.message_id <= b.last_message))
    GROUP BY b.ordinal
)
SELECT r.*, t.messages
FROM snapshot_render r JOIN texts t USING (ordinal);
