-- snapshot_decisions: the final word on every candidate. After the policy of snapshot_candidates come the
-- length limit (from snapshot_tokens, the token count of every prefix ending with a reply: drop, or cut after
-- the last reply that fits) and then the per-user cap (a user keeps at most max_user_share of the selected
-- conversations, at least one; which ones is decided by a hash of the id, so the choice is stable as data
-- grows). `reasons` empty means selected; `cut` is the position of the last message kept.
CREATE OR REPLACE TEMP TABLE snapshot_decisions AS
WITH lengths AS (
    SELECT c.conversation_id,
           max(t.tokens) FILTER (WHERE t.position = c.last_reply) > $max_tokens AS over_max,
           max(t.position) FILTER (WHERE t.tokens <= $max_tokens) AS fits_until
    FROM snapshot_candidates c JOIN snapshot_tokens t USING (fingerprint)
    WHERE len(c.reasons) = 0
    GROUP BY c.conversation_id
),
sized AS (
    SELECT c.*, coalesce(l.over_max, false) AS over_max,
           CASE WHEN l.over_max AND $truncate THEN l.fits_until ELSE c.last_reply END AS cut,
           c.reasons || CASE WHEN l.over_max AND (NOT $truncate OR l.fits_until IS NULL)
                             THEN ['too_many_tokens'] ELSE []::VARCHAR[] END AS sized_reasons
    FROM snapshot_candidates c LEFT JOIN lengths l USING (conversation_id)
),
capped AS (
    SELECT conversation_id,
           row_number() OVER (PARTITION BY user_id ORDER BY md5(conversation_id))
               > greatest(1, floor($max_user_share * (SELECT count(*) FROM sized WHERE len(sized_reasons) = 0)))
               AS over_cap
    FROM sized
    WHERE len(sized_reasons) = 0 AND user_id IS NOT NULL
      AND $max_user_share < 1  -- a share of 1 caps nothing: no window over every selected conversation
)
SELECT s.conversation_id, s.split, s.bucket, s.first_at, s.fingerprint, s.over_max, s.cut,
       s.sized_reasons || CASE WHEN c.over_cap THEN ['user_share_cap'] ELSE []::VARCHAR[] END AS reasons
FROM sized s LEFT JOIN capped c USING (conversation_id);
