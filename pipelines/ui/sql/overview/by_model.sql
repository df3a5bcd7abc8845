-- by_model: replies and conversations per model (no model: replies logged without one), from stats_by_model.
SELECT model, series, value
FROM (UNPIVOT (SELECT coalesce(model, '(none)') AS model, replies, conversations FROM stats_by_model)
      ON replies, conversations INTO NAME series VALUE value)
ORDER BY model, series;
