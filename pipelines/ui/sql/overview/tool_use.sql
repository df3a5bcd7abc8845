-- tool_use: per day, the tool results (role 'tool') and the replies that call a tool (their text holds a
-- canonical {"tool_calls": ...} object, as the proxy writes it; the importers keep tool results, not calls).
SELECT day, series, value
FROM (UNPIVOT (
          SELECT occurred_at::DATE AS day,
                 count(*) FILTER (WHERE role = 'tool') AS tool_results,
                 count(*) FILTER (WHERE role = 'assistant' AND contains(content, '"tool_calls"')) AS tool_calls
          FROM clean_messages
          GROUP BY day)
      ON tool_results, tool_calls INTO NAME series VALUE value)
ORDER BY day, series;
