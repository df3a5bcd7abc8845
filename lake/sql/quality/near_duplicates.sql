-- near_duplicates: the conversation contents near-duplicate detection looks at, each with the contents it is
-- a near-duplicate of: `similar_contents`, a list of {content_hash, similarity} (empty: none). A content is a
-- conversation_features.content_hash (the same roles saying the same normalised texts at the same turns) of
-- conversations with at least `dedup.min_shingles` shingles; shorter ones are only deduplicated exactly (an
-- estimate over so few shingles is noise). conversation_dedup turns the pairs into which conversation
-- repeats which.
--
-- MinHash with LSH over word 3-shingles:
--   * Signature, by one-permutation hashing: conversation_features.signature, the smallest sampled shingle
--     hash of each non-empty bin of `dedup.minhash_permutations` (see conversation_partials_of), one row per
--     (content, bin) here; a hash's top bits are its bin. Equal contents have equal signatures.
--   * Similarity: the share of bins where two signatures hold the same hash, among the bins either of them
--     fills, estimates the Jaccard similarity of the two shingle sets; a pair at or above
--     `dedup.near_duplicate_threshold` (default 0.8) is similar.
--   * LSH: the bins are cut into `dedup.minhash_bands` bands; contents whose hashes agree on every bin of
--     some band are candidates (they share the band's key: conversation_features.bands, computed with the
--     signature), and only candidates are compared. With the defaults (64 bins, 16 bands of 4) a pair at
--     similarity 0.8 becomes a candidate with probability 1 - (1 - 0.8^4)^16 > 0.9999, a pair at 0.3 with
--     0.12. Candidates whose numbers of filled bins differ too much to reach the threshold are not compared
--     (the estimate is at most the smaller number over the larger).
-- Everything is relational (rows of bins and bands joined and counted), not per-row list work: that keeps the
-- cost proportional to the signatures.
--
-- Incremental: a pair's similarity depends on nothing but its two contents, so what was compared once is
-- remembered. near_duplicates_known is this view as an earlier session of the home left it (lake/views.py
-- reads it from <home>/cache and materialize() writes it back), and of the candidate pairs only those with a
-- content it does not hold ("fresh") are compared: after an append, the new and the continued conversations
-- against all the others, not every conversation against every other. The answer is the same either way.
CREATE OR REPLACE VIEW near_duplicates AS
WITH features AS NOT MATERIALIZED (  -- bound once: each mention of a view binds its whole tree
    SELECT conversation_id, content_hash, shingles, signature, bands FROM conversation_features
),
eligible AS (  -- one conversation of each content (they all have its signature), numbered: integer keys join fast
    SELECT content_hash, min(conversation_id) AS conversation_id, row_number() OVER () AS no
    FROM features
    WHERE shingles >= getvariable('dedup_min_shingles')
    GROUP BY content_hash
),
contents AS MATERIALIZED (
    SELECT e.no, e.content_hash, e.conversation_id, len(c.signature) AS bins, c.bands,
           e.content_hash NOT IN (SELECT content_hash FROM near_duplicates_known) AS fresh
    FROM eligible e JOIN features c USING (conversation_id)
),
fresh_bands AS (
    SELECT no, unnest(bands) AS band_key FROM contents WHERE fresh
),
known_bands AS (
    SELECT no, unnest(bands) AS band_key FROM contents WHERE NOT fresh
),
-- each pair sharing a band key once, if one of the two is fresh
candidates AS (
    SELECT DISTINCT no, other FROM (
        SELECT a.no, b.no AS other FROM fresh_bands a JOIN fresh_bands b ON a.band_key = b.band_key AND b.no < a.no
        UNION ALL
        SELECT a.no, b.no
        FROM fresh_bands a
        -- the semi join hashes the few fresh keys, where a join would hash every known one
        JOIN (SELECT * FROM known_bands WHERE band_key IN (SELECT band_key FROM fresh_bands)) b USING (band_key)
    )
),
-- the candidates whose numbers of filled bins allow the threshold: a barrier, so the signatures' rows join
-- these few pairs rather than every candidate
compared AS MATERIALIZED (
    SELECT c.no, c.other, a.bins + b.bins AS bins_either
    FROM candidates c
    JOIN contents a ON a.no = c.no
    JOIN contents b ON b.no = c.other
    WHERE least(a.bins, b.bins) / greatest(a.bins, b.bins) >= getvariable('dedup_near_duplicate_threshold')
),
signatures AS (
    SELECT no, (x >> getvariable('dedup_bin_shift'))::INTEGER AS bin, x
    FROM (SELECT s.no, unnest(c.signature) AS x
          FROM (SELECT no, conversation_id FROM contents
                WHERE no IN (SELECT no FROM compared) OR no IN (SELECT other FROM compared)) s
          JOIN features c USING (conversation_id))
),
matched AS (  -- same bins over the bins either fills
    SELECT c.no, c.other,
           count(*) FILTER (WHERE s.x = t.x) / (any_value(c.bins_either) - count(*)) AS similarity
    FROM compared c
    JOIN signatures s ON s.no = c.no
    JOIN signatures t ON t.no * 1024 + t.bin = c.other * 1024 + s.bin
    GROUP BY c.no, c.other
),
found AS (
    SELECT a.content_hash, b.content_hash AS similar_hash, m.similarity
    FROM matched m
    JOIN contents a ON a.no = m.no
    JOIN contents b ON b.no = m.other
    WHERE m.similarity >= getvariable('dedup_near_duplicate_threshold')
),
remembered AS (  -- the known pairs whose contents are both still here
    SELECT content_hash, s.content_hash AS similar_hash, s.similarity
    FROM (SELECT content_hash, unnest(similar_contents) AS s FROM near_duplicates_known
          WHERE content_hash IN (SELECT content_hash FROM contents))
    WHERE s.content_hash IN (SELECT content_hash FROM contents)
),
pairs AS (
    SELECT * FROM found
    UNION ALL SELECT similar_hash, content_hash, similarity FROM found
    UNION ALL SELECT * FROM remembered
)
SELECT c.content_hash, coalesce(p.similar_contents, []) AS similar_contents
FROM contents c
LEFT JOIN (SELECT content_hash, list({'content_hash': similar_hash, 'similarity': similarity} ORDER BY similar_hash)
                                    AS similar_contents
           FROM pairs GROUP BY content_hash) p USING (content_hash);
