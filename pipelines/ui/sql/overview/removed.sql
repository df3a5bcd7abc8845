-- removed: why conversations are left out: each quality reason (stats_quality; a conversation can have
-- several) and the exact and near duplicates dedup removes (stats).
SELECT reason, 'quality' AS series, conversations AS value FROM stats_quality
UNION ALL
SELECT 'exact duplicate', 'dedup', exact_duplicates FROM stats
UNION ALL
SELECT 'near duplicate', 'dedup', near_duplicates FROM stats
ORDER BY value DESC, reason;
