-- stats_by_source: what each source (logger, proxy, import:<format>, ...) brought, and how much of it the
-- quality and dedup views would drop. A conversation counts under every source it has messages from.
CREATE OR REPLACE VIEW stats_by_source AS
WITH per_source AS (
    SELECT source, conversation_id, count(*) AS messages, sum(chars) AS chars
    FROM clean_messages
    GROUP BY source, conversation_id
)
SELECT s.source,
       count(*) AS conversations,
       sum(s.messages)::BIGINT AS messages,
       sum(s.chars)::BIGINT AS chars,
       count(*) FILTER (WHERE NOT q.passed) AS quality_dropped,
       count(*) FILTER (WHERE d.is_duplicate) AS duplicates,
       count(*) FILTER (WHERE NOT q.passed) / count(*) AS quality_drop_rate,
       count(*) FILTER (WHERE d.is_duplicate) / count(*) AS duplicate_rate
FROM per_source s
LEFT JOIN quality q USING (conversation_id)
LEFT JOIN conversation_dedup d USING (conversation_id)
GROUP BY s.source
ORDER BY messages DESC, s.source;
