-- snapshot_selected: the selected conversations in output order (by split, then first message time, then id)
-- with their shard. Shard boundaries depend on content, not on position: a shard ends after a conversation
-- whose id hashes to 0 modulo shard_size. New conversations (which sort last) and changed ones only touch
-- their own shard, so the next snapshot can take every other file over unchanged.
CREATE OR REPLACE TEMP TABLE snapshot_selected AS
SELECT conversation_id, split, fingerprint, cut,
       coalesce(sum(boundary) OVER (PARTITION BY split ORDER BY first_at, conversation_id
                                    ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)::INTEGER AS shard,
       row_number() OVER (ORDER BY split, first_at, conversation_id) AS ordinal
FROM (
    SELECT *, (('0x' || substr(md5(conversation_id), 9, 8))::UBIGINT % $shard_size = 0)::INTEGER AS boundary
    FROM snapshot_decisions
    WHERE len(reasons) = 0
);
