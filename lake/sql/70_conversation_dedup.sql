-- conversation_dedup: which conversations repeat another one, exactly or nearly; the first one (earliest
-- first message, then id) of each group is kept and the others point at it.
--
-- Exact: equal conversation_features.content_hash (the same roles saying the same normalised texts at the
--   same turns). duplicate_of = the first conversation with that hash.
-- Near: MinHash with LSH over word 3-shingles, among the conversations the exact step keeps that have at
--   least `dedup.min_shingles` shingles (shorter ones are only deduplicated exactly: an estimate over so few
--   shingles is noise).
--   * Signature, by one-permutation hashing: conversation_features.signature, the smallest sampled shingle
--     hash of each non-empty bin of `dedup.minhash_permutations` (see conversation_partials_of), one row per
--     (conversation, bin) here; a hash's top bits are its bin.
--   * Similarity: the share of bins where two signatures hold the same hash, among the bins either of them
--     fills, estimates the Jaccard similarity of the two shingle sets.
--   * LSH: the bins are cut into `dedup.minhash_bands` bands; conversations whose hashes agree on every bin of
--     some band are candidates (they share the band's key: conversation_features.bands, computed with the
--     signature), and only candidates are compared. With the defaults (64 bins, 16 bands of 4)
--     a pair at similarity 0.8 becomes a candidate with probability 1 - (1 - 0.8^4)^16 > 0.9999, a pair at
--     0.3 with 0.12.
--   near_duplicate_of = the first earlier conversation whose estimated similarity is at least
--   `dedup.near_duplicate_threshold` (default 0.8); `similarity` is that estimate. A chain A ~ B ~ C drops
--   B and C even if C is not similar to A.
-- Everything is relational (rows of bins and bands joined and counted), not per-row list work: that keeps
-- the cost proportional to the signatures. Candidates whose numbers of filled bins differ too much to reach
-- the threshold are not compared (the estimate is at most the smaller number over the larger).
CREATE OR REPLACE VIEW conversation_dedup AS
WITH exact AS (
    SELECT conversation_id, content_hash, first_at, shingles,
           first_value(conversation_id) OVER (PARTITION BY content_hash ORDER BY first_at, conversation_id) AS first_id
    FROM conversation_features
),
-- the conversations near-duplicate detection looks at, numbered in keep order (integer keys join fast; the
-- lists join the numbers afterwards: a window sorts every column it carries). conversation_features is read
-- twice, which is free once materialize() has made it a table (stats and snapshots do).
ranked AS (
    SELECT conversation_id, row_number() OVER (ORDER BY first_at, conversation_id) AS rank
    FROM exact
    WHERE first_id = conversation_id AND shingles >= getvariable('dedup_min_shingles')
),
representatives AS MATERIALIZED (
    SELECT r.rank, r.conversation_id, c.signature, c.bands
    FROM ranked r JOIN conversation_features c USING (conversation_id)
),
signatures AS (
    SELECT rank, (x >> getvariable('dedup_bin_shift'))::INTEGER AS bin, x
    FROM (SELECT rank, unnest(signature) AS x FROM representatives)
),
filled AS (
    SELECT rank, len(signature) AS bins FROM representatives WHERE signature IS NOT NULL
),
bands AS (
    SELECT rank, unnest(bands) AS band_key FROM representatives
),
candidates AS (
    SELECT DISTINCT b.rank, a.rank AS similar_rank
    FROM bands a
    JOIN bands b ON a.band_key = b.band_key AND a.rank < b.rank
),
matched AS (
    SELECT c.rank, c.similar_rank, any_value(fs.bins) + any_value(ft.bins) AS bins_either,
           count(*) AS both_filled, count(*) FILTER (WHERE s.x = t.x) AS same
    FROM candidates c
    JOIN filled fs ON fs.rank = c.rank
    JOIN filled ft ON ft.rank = c.similar_rank
    JOIN signatures s ON s.rank = c.rank
    JOIN signatures t ON t.rank * 1024 + t.bin = c.similar_rank * 1024 + s.bin
    WHERE least(fs.bins, ft.bins) / greatest(fs.bins, ft.bins) >= getvariable('dedup_near_duplicate_threshold')
    GROUP BY c.rank, c.similar_rank
),
nearest AS (
    SELECT r.conversation_id, s.conversation_id AS near_duplicate_of, n.similarity
    FROM (
        SELECT rank, min(similar_rank) AS similar_rank,
               arg_min(same / (bins_either - both_filled), similar_rank) AS similarity
        FROM matched
        WHERE same / (bins_either - both_filled) >= getvariable('dedup_near_duplicate_threshold')
        GROUP BY rank
    ) n
    JOIN ranked r ON r.rank = n.rank
    JOIN ranked s ON s.rank = n.similar_rank
)
SELECT e.conversation_id, e.content_hash, e.first_at,
       nullif(e.first_id, e.conversation_id) AS duplicate_of,
       n.near_duplicate_of, n.similarity,
       e.first_id <> e.conversation_id OR n.near_duplicate_of IS NOT NULL AS is_duplicate
FROM exact e
LEFT JOIN nearest n USING (conversation_id);
