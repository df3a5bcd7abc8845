-- snapshot_selected: the selected conversations in output order (by split, then first message time, then id)
-- with their shard. Shard boundaries depend on content, not on position: a shard ends after a conversation
-- whose split bucket (the stable hash of its id, see snapshot_candidates) is the smallest of those within
-- `$shard_size / 2` conversations either way, which one conversation in `$shard_size + 1` is. New
-- conversations (which sort last) and changed ones only touch their own shard, and a boundary moves only where
-- conversations come or go within half a shard of it, so the next snapshot takes every other file over
-- unchanged. Two boundaries are never closer than half a shard, so shard sizes vary far less than with a
-- fixed rule such as "the hash is 0 modulo the size" (which made shards of 67 and of 15,000 conversations,
-- and a changed conversation mostly sits in a large one): on the snapshot benchmark's lake, with as many
-- files, a cut after new data rewrites a quarter fewer conversations.
CREATE OR REPLACE TEMP TABLE snapshot_selected AS
WITH selected AS (
    SELECT conversation_id, split, fingerprint, cut, first_at, bucket
    FROM snapshot_decisions
    WHERE len(reasons) = 0
),
marked AS (
    SELECT *,
           (bucket = min(bucket) OVER (PARTITION BY split ORDER BY first_at, conversation_id
                                       ROWS BETWEEN $shard_size // 2 PRECEDING
                                                AND $shard_size // 2 FOLLOWING))::INTEGER AS boundary
    FROM selected
)
SELECT conversation_id, split, fingerprint, cut,
       coalesce(sum(boundary) OVER (PARTITION BY split ORDER BY first_at, conversation_id
                                    ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)::INTEGER AS shard,
       row_number() OVER (ORDER BY split, first_at, conversation_id) AS ordinal
FROM marked;
