-- filters: the values each filter of the Conversations page offers, one row per (filter, value).
SELECT 'model' AS filter, model AS value FROM (SELECT DISTINCT unnest(models) AS model FROM conversations)
UNION ALL SELECT 'source', source FROM (SELECT DISTINCT unnest(sources) AS source FROM conversations)
UNION ALL SELECT 'tag', tag FROM (SELECT DISTINCT tag FROM tags)
UNION ALL SELECT 'feedback', feedback FROM (SELECT DISTINCT feedback FROM conversations)
UNION ALL SELECT 'flag', reason FROM (SELECT unnest(quality_reasons()) AS reason)
ORDER BY filter, value;
