-- snapshot_canonical: the rows of snapshot_render (conversation_id, ordinal, cut, and whatever else the caller
-- carries along) with their cleaned text: `messages`, a list of {content, role} in turn order up to
-- position `cut`. The only query that reads text. It is clean_messages' text, read straight from
-- message_features (clean_messages.content is message_features.clean_content by event id): the positions
-- already hold the event ids, and that skips joining the messages a second time. Unordered: every reader
-- orders by `ordinal`.
CREATE OR REPLACE TEMP TABLE snapshot_canonical AS
WITH texts AS (
    SELECT r.ordinal, list({'content': f.clean_content, 'role': p.role} ORDER BY p.position) AS messages
    FROM snapshot_render r
    JOIN snapshot_positions p ON p.conversation_id = r.conversation_id AND p.position <= r.cut
    JOIN message_features f ON f.event_id = p.event_id
    GROUP BY r.ordinal
)
SELECT r.*, t.messages
FROM snapshot_render r JOIN texts t USING (ordinal);
