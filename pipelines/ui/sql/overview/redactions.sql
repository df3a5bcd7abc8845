-- redactions: placeholders the cleaning inserted, by type, and the messages that had one (stats_redactions).
SELECT type, series, value
FROM (UNPIVOT (SELECT type, redactions, messages FROM stats_redactions) ON redactions, messages
      INTO NAME series VALUE value)
ORDER BY type, series;
