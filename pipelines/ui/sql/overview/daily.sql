-- daily: conversations and messages active each day (UTC), from stats_daily.
SELECT day, series, value
FROM (UNPIVOT (SELECT day, conversations, messages FROM stats_daily) ON conversations, messages
      INTO NAME series VALUE value)
ORDER BY day, series;
