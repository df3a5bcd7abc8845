-- stats_quality: conversations dropped by the quality view, by reason (a conversation can have several),
-- with the share of all conversations; every reason is listed, also at zero.
CREATE OR REPLACE VIEW stats_quality AS
WITH judged AS (
    SELECT reasons FROM quality
),
dropped AS (
    SELECT unnest(reasons) AS reason FROM judged
)
SELECT r.reason,
       count(d.reason) AS conversations,
       count(d.reason) / nullif((SELECT count(*) FROM judged), 0) AS share
FROM (SELECT unnest(quality_reasons()) AS reason) r
LEFT JOIN dropped d USING (reason)
GROUP BY r.reason
ORDER BY conversations DESC, r.reason;
