-- conversation_dedup: which conversations repeat another one, exactly or nearly; the first one (earliest
-- first message, then id) of each group is kept and the others point at it.
--
-- Exact: equal conversation_features.content_hash (the same roles saying the same normalised texts at the
--   same turns). duplicate_of = the first conversation with that hash.
-- Near: among the conversations the exact step keeps, near_duplicate_of = the first earlier one whose content
--   is similar to this one's (near_duplicates: MinHash with LSH over word 3-shingles, at least
--   `dedup.near_duplicate_threshold`, default 0.8); `similarity` is that estimate. A chain A ~ B ~ C drops
--   B and C even if C is not similar to A.
CREATE OR REPLACE VIEW conversation_dedup AS
WITH exact AS (
    SELECT conversation_id, content_hash, first_at,
           first_value(conversation_id) OVER (PARTITION BY content_hash ORDER BY first_at, conversation_id) AS first_id
    FROM conversation_features
),
kept AS (  -- numbered in keep order
    SELECT conversation_id, content_hash, row_number() OVER (ORDER BY first_at, conversation_id) AS rank
    FROM exact
    WHERE first_id = conversation_id
),
nearest AS (
    SELECT k.conversation_id, arg_min(e.conversation_id, e.rank) AS near_duplicate_of,
           arg_min(p.near.similarity, e.rank) AS similarity
    FROM (SELECT content_hash, unnest(similar_contents) AS near FROM near_duplicates) p
    JOIN kept k USING (content_hash)
    JOIN kept e ON e.content_hash = p.near.content_hash AND e.rank < k.rank
    GROUP BY k.conversation_id
)
SELECT e.conversation_id, e.content_hash, e.first_at,
       nullif(e.first_id, e.conversation_id) AS duplicate_of,
       n.near_duplicate_of, n.similarity,
       e.first_id <> e.conversation_id OR n.near_duplicate_of IS NOT NULL AS is_duplicate
FROM exact e
LEFT JOIN nearest n USING (conversation_id);
