-- snapshot_candidates: every conversation of the pinned lake with its split and the reasons the selection
-- policy leaves it out (an empty list: selected so far; the length limit and the per-user cap come later,
-- in snapshot_decisions). Parameters: the `snapshot` config section.
--
-- split: a stable hash of the conversation id, bucket = int(md5(salt || id)[:8], 16) / 2^32; test takes
-- [0, test), validation [1 - validation, 1), train the rest. It depends on nothing else, so a conversation
-- keeps its split in every snapshot.
-- last_reply (the position of the last reply) and fingerprint (of the conversation's message events: an
-- unchanged one means unchanged text, and a snapshot may reuse what an earlier one rendered) come from
-- conversation_features.
CREATE OR REPLACE TEMP TABLE snapshot_candidates AS
WITH base AS (
    SELECT c.conversation_id, c.user_id, c.first_at, c.models, c.sources, c.feedback, c.replies, c.last_reply,
           c.fingerprint,
           ('0x' || left(md5($split_salt || c.conversation_id), 8))::UBIGINT / 4294967296.0 AS bucket,
           -- negative feedback is the `feedback` setting's call, not the quality view's
           list_filter(q.reasons, lambda r: r <> 'negative_feedback') AS quality_reasons,
           d.duplicate_of, d.near_duplicate_of
    FROM conversation_features c
    LEFT JOIN quality q USING (conversation_id)
    LEFT JOIN conversation_dedup d USING (conversation_id)
),
split AS (
    SELECT *,
           CASE WHEN bucket < $test THEN 'test' WHEN bucket >= 1 - $validation THEN 'validation' ELSE 'train' END
               AS split,
           coalesce(duplicate_of, near_duplicate_of, conversation_id) AS points_at
    FROM base
),
-- The leak guard. A train conversation stays out when it is a duplicate or near-duplicate of a held-out
-- (validation or test) conversation, when one is of it, or when both are of the same earlier conversation:
-- it matches a held-out id or the conversation a held-out one points at. Held-out conversations count
-- whether or not this snapshot selects them, so the guard holds across selection policies.
heldout AS (
    SELECT conversation_id AS id FROM split WHERE split <> 'train'
    UNION
    SELECT points_at FROM split WHERE split <> 'train'
)
SELECT conversation_id, user_id, first_at, split, bucket, replies, last_reply, fingerprint,
       CASE WHEN $require_quality
            THEN list_transform(coalesce(quality_reasons, []::VARCHAR[]), lambda r: 'quality:' || r)
            ELSE []::VARCHAR[] END
       || list_filter([
           CASE WHEN $drop_duplicates AND duplicate_of IS NOT NULL THEN 'duplicate' END,
           CASE WHEN $drop_near_duplicates AND duplicate_of IS NULL AND near_duplicate_of IS NOT NULL
                THEN 'near_duplicate' END,
           CASE WHEN split = 'train' AND (conversation_id IN (SELECT id FROM heldout)
                                          OR points_at IN (SELECT id FROM heldout))
                THEN 'heldout_duplicate' END,
           CASE WHEN $feedback <> 'any' AND feedback = 'negative' THEN 'negative_feedback'
                WHEN $feedback = 'only_positive' AND feedback <> 'positive' THEN 'not_positive' END,
           CASE WHEN first_at < $since OR first_at >= $until THEN 'outside_time_window' END,
           CASE WHEN len($models) > 0 AND NOT (len(models) > 0 AND list_has_all($models, models))
                THEN 'model_not_included' END,
           CASE WHEN len($sources) > 0 AND NOT list_has_all($sources, sources) THEN 'source_not_included' END,
           CASE WHEN replies < $min_turns THEN 'too_few_turns' END,
           CASE WHEN replies > $max_turns THEN 'too_many_turns' END
       ], lambda r: r IS NOT NULL) AS reasons
FROM split;
