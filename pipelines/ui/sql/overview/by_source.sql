-- by_source: what each source brought, and how many of its conversations quality and dedup drop,
-- from stats_by_source.
SELECT source, series, value
FROM (UNPIVOT (SELECT source, conversations, quality_dropped, duplicates FROM stats_by_source)
      ON conversations, quality_dropped, duplicates INTO NAME series VALUE value)
ORDER BY source, series;
