-- snapshot_replies: the unit of the single-turn formats, one row per example position `i` (1-based) of
-- snapshot_index.reply_positions: the reply is messages[i], everything before it its context.
CREATE OR REPLACE TEMP VIEW snapshot_replies AS
SELECT * FROM (
    SELECT ordinal, conversation_id, messages, tools, prefix_tokens, unnest(reply_positions) AS i
    FROM snapshot_canonical
);
