-- snapshot_index: one row per selected conversation, ids and numbers only (never text): split, shard,
-- fingerprint, how many messages it keeps (`message_count`), the positions of its single-turn examples
-- (every assistant reply that directly follows a user message; replies after a tool result or another reply
-- only appear as context, and in the multi-turn formats), and the token count of the conversation up to
-- each reply (`prefix_tokens`, aligned with the messages, NULL where no reply ends; NULL itself when no
-- tokenizer measured the snapshot). Written with the snapshot as conversations.parquet: the manifest's
-- counts and token statistics, `diff` and `export` read it.
CREATE OR REPLACE TEMP TABLE snapshot_index AS
WITH prefix_tokens AS (
    SELECT fingerprint, map(list(position), list(tokens)) AS at, min(position) AS first FROM snapshot_tokens GROUP BY fingerprint
)
SELECT s.conversation_id, s.split, s.shard, s.ordinal, s.fingerprint,
       s.cut::INTEGER AS message_count,
       list_filter(c.reply_positions, lambda i: i <= s.cut) AS reply_positions,
       CASE WHEN t.first <= s.cut THEN list_transform(range(1, s.cut + 1), lambda i: t.at[i]) END AS prefix_tokens
FROM snapshot_selected s
JOIN conversation_features c USING (conversation_id)
LEFT JOIN prefix_tokens t ON t.fingerprint = s.fingerprint;
