-- exchanges_of(messages): every row of the relation `messages` (the name of a table or view with the messages
-- view's columns) with what a turn is made of:
--   is_step    the message is a step of an agent's work rather than something said: an assistant message
--              that calls tools, or a tool's result
--   exchange   the number of messages that are not steps up to this one in its conversation (turn order):
--              a message that is not a step opens an exchange, and the steps after it belong to it
-- A turn (the turns and turn_dedup views) is a user message, the steps of its exchange (the calls and results
-- in between), and the assistant message that opens the next exchange: the reply. A plain chat has no steps,
-- and a turn is then a reply with the user message right before it.
CREATE OR REPLACE MACRO exchanges_of(messages) AS TABLE
SELECT *,
       count(*) FILTER (WHERE NOT is_step) OVER (PARTITION BY conversation_id ORDER BY turn_index, message_id
                                                 ROWS UNBOUNDED PRECEDING) AS exchange
FROM (SELECT *, role = 'tool' OR (role = 'assistant' AND coalesce(len(tool_calls), 0) > 0) AS is_step
      FROM query_table(messages));
