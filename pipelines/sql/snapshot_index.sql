-- snapshot_index: one row per selected conversation, ids and numbers only (never text): split, shard,
-- fingerprint, how many messages it keeps (`message_count`), the positions of its single-turn examples
-- (every assistant reply that directly follows a user message; replies after a tool result or another reply
-- only appear as context, and in the multi-turn formats), and the token count of the conversation up to
-- each reply (`prefix_tokens`, aligned with the messages, NULL where no reply ends; NULL itself when no
-- tokenizer measured the snapshot). Written with the snapshot as conversations.parquet: the manifest's
-- counts and token statistics, `diff` and `export` read it.
CREATE OR REPLACE TEMP TABLE snapshot_index AS
SELECT s.conversation_id, s.split, s.shard, s.ordinal, s.fingerprint,
       count(*)::INTEGER AS message_count,
       coalesce(list(p.position ORDER BY p.position) FILTER (WHERE p.role = 'assistant' AND p.prev_role = 'user'),
                []::INTEGER[]) AS reply_positions,
       CASE WHEN count(t.tokens) > 0 THEN list(t.tokens ORDER BY p.position) END AS prefix_tokens
FROM snapshot_selected s
JOIN (SELECT *, lag(role) OVER (PARTITION BY conversation_id ORDER BY position) AS prev_role
      FROM snapshot_positions) p
  ON p.conversation_id = s.conversation_id AND p.position <= s.cut
LEFT JOIN snapshot_tokens t ON t.fingerprint = s.fingerprint AND t.position = p.position
GROUP BY ALL;
