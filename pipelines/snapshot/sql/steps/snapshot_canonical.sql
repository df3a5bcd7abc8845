-- snapshot_canonical: the rows of snapshot_render (conversation_id, ordinal, fingerprint, cut, and whatever
-- else the caller carries along) with their cleaned text: `messages`, a list of {content, role} in turn
-- order up to position `cut`. The only query that reads text, from two places:
--   * snapshot_reused: the messages an earlier snapshot cut by the same code rendered from the same events
--     (fingerprint) to the same position (cut), read back from its messages files (see _Cut._canonical);
--   * for the others (snapshot_fresh), clean_messages' text, read straight from message_features
--     (clean_messages.content is message_features.clean_content by event id): their sequences already hold
--     the event ids in order, and that skips joining the messages. It reads snapshot_texts and
--     snapshot_sequences, message_features and conversation_sequences of just the data files that hold these
--     conversations (lake.views.features_of_conversations).
-- Both give the same bytes for the same conversation. Unordered: every reader orders by `ordinal`.
CREATE OR REPLACE TEMP TABLE snapshot_canonical AS
WITH kept AS (  -- two unnests in the select list zip; a lateral unnest (WITH ORDINALITY) planned a costly delim join
    SELECT r.ordinal, unnest(c.sequence[1:r.cut]) AS message, unnest(range(1, r.cut + 1)) AS position
    FROM snapshot_fresh r
    JOIN snapshot_sequences c USING (conversation_id)
),
texts AS (
    SELECT k.ordinal, list_in_order({'content': f.clean_content, 'role': k.message.role}, k.position) AS messages
    FROM kept k
    JOIN snapshot_texts f ON f.event_id = k.message.event_id
    GROUP BY k.ordinal
)
SELECT r.*, t.messages
FROM snapshot_fresh r JOIN texts t USING (ordinal)
UNION ALL BY NAME
SELECT r.*, u.messages
FROM snapshot_render r JOIN snapshot_reused u USING (conversation_id);
