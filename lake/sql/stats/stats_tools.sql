-- stats_tools: tool use, one row per tool that was called or answered (NULL: results that name no tool and
-- answer no call by id): the calls made to it, the conversations that use it, its results, the failed calls
-- (results that report a failure, failed_tool_result()) and their share of its results.
-- A result's tool is the name it gives (tool_name), else that of the call whose id it answers.
CREATE OR REPLACE VIEW stats_tools AS
WITH calls AS (
    SELECT conversation_id, c.id, c.name
    FROM (SELECT conversation_id, unnest(tool_calls) AS c FROM clean_messages WHERE tool_calls IS NOT NULL)
),
call_names AS (
    SELECT conversation_id, id, any_value(name) AS name FROM calls WHERE id IS NOT NULL GROUP BY conversation_id, id
),
results AS (
    SELECT r.conversation_id, coalesce(r.tool_name, c.name) AS tool, failed_tool_result(r.content) AS failed
    FROM clean_messages r
    LEFT JOIN call_names c ON c.conversation_id = r.conversation_id AND c.id = r.tool_call_id
    WHERE r.role = 'tool'
),
used AS (
    SELECT name AS tool, conversation_id, true AS is_call, false AS failed FROM calls
    UNION ALL
    SELECT tool, conversation_id, false, failed FROM results
)
SELECT tool,
       count(*) FILTER (WHERE is_call) AS calls,
       count(DISTINCT conversation_id) AS conversations,
       count(*) FILTER (WHERE NOT is_call) AS results,
       count(*) FILTER (WHERE failed) AS failed_calls,
       count(*) FILTER (WHERE failed) / nullif(count(*) FILTER (WHERE NOT is_call), 0) AS failure_rate
FROM used
GROUP BY tool
ORDER BY calls DESC, results DESC, tool;
