-- turns: each assistant reply to a user message, as it happened: the prompt, the agent's steps in between (the
-- tool calls and their results, with any reasoning), the reply with its reasoning, and the messages before the
-- prompt (context). A turn is a user message, the steps after it (assistant messages that call tools, tool
-- results) and the first assistant message after them that calls no tool (exchanges_of); a plain chat turn
-- has no steps. A user message whose calls never reach an answer (the conversation stops at a step) has no
-- turn. Messages are whole: {role, content, reasoning, tool_calls, tool_call_id, tool_name, attachments} in
-- context and steps. The unit of single-turn training formats.
CREATE OR REPLACE VIEW turns AS
WITH exchanges AS (
    SELECT *,
           list({'role': role, 'content': content, 'reasoning': reasoning, 'tool_calls': tool_calls,
                 'tool_call_id': tool_call_id, 'tool_name': tool_name, 'attachments': attachments}) OVER (
               PARTITION BY conversation_id ORDER BY turn_index, message_id
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS earlier,
           last_value(tools IGNORE NULLS) OVER (
               PARTITION BY conversation_id ORDER BY turn_index, message_id ROWS UNBOUNDED PRECEDING) AS tools_offered
    FROM exchanges_of('messages')
),
steps AS (  -- the steps of each exchange that has any
    SELECT conversation_id, exchange,
           list({'role': role, 'content': content, 'reasoning': reasoning, 'tool_calls': tool_calls,
                 'tool_call_id': tool_call_id, 'tool_name': tool_name, 'attachments': attachments}
                ORDER BY turn_index, message_id) AS steps
    FROM exchanges
    WHERE is_step
    GROUP BY conversation_id, exchange
),
heads AS (  -- the messages that open an exchange, each with the one before
    SELECT *,
           lag(role) OVER w AS prompt_role,
           lag(content) OVER w AS prompt,
           lag(attachments) OVER w AS prompt_attachments,
           lag(earlier) OVER w AS context
    FROM exchanges
    WHERE NOT is_step
    WINDOW w AS (PARTITION BY conversation_id ORDER BY turn_index, message_id)
)
SELECT h.conversation_id, h.message_id AS reply_id, h.turn_index, h.user_id, h.model, h.occurred_at,
       h.prompt, h.content AS reply, coalesce(h.context, []) AS context,
       h.prompt_attachments, coalesce(s.steps, []) AS steps, h.reasoning, h.attachments AS reply_attachments,
       h.tools_offered AS tools
FROM heads h
LEFT JOIN steps s ON s.conversation_id = h.conversation_id AND s.exchange = h.exchange - 1
WHERE h.role = 'assistant' AND h.prompt_role = 'user';
