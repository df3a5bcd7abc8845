-- tool_use: per day, the tool calls replies made and the tool results (role 'tool') sent back.
SELECT day, series, value
FROM (UNPIVOT (
          SELECT occurred_at::DATE AS day,
                 count(*) FILTER (WHERE role = 'tool') AS tool_results,
                 coalesce(sum(len(tool_calls)), 0)::BIGINT AS tool_calls
          FROM clean_messages
          GROUP BY day)
      ON tool_results, tool_calls INTO NAME series VALUE value)
ORDER BY day, series;
