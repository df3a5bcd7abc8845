-- failed_tool_result(content): a tool's result (the text of a `role = 'tool'` message) that reports a failure:
-- it opens like an error message (re_error_reply(): "Error: ...", "Exception", a traceback, "request failed",
-- ...), or it is a JSON object whose top-level "error" is set (not null, false or empty) or whose "isError" /
-- "is_error" is true (MCP's flag). An empty result is no failure. What stats count as a failed call.
CREATE OR REPLACE MACRO failed_tool_result(content) AS coalesce(
    regexp_matches(content, re_error_reply())
    OR CASE WHEN starts_with(ltrim(content), '{') AND json_valid(content)
            THEN coalesce(json_extract(content, '$.error')::VARCHAR NOT IN ('null', 'false', '""', '{}', '[]'), false)
                 OR coalesce(json_extract(content, '$.isError')::VARCHAR = 'true', false)
                 OR coalesce(json_extract(content, '$.is_error')::VARCHAR = 'true', false)
            ELSE false END,
    false);
