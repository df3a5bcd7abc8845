-- snapshot_canonical: the rows of snapshot_render (conversation_id, ordinal, fingerprint, cut, and whatever
-- else the caller carries along) with their cleaned messages, whole turns in the shape transformers' chat
-- templates take (the messages format, see sql/formats/messages.sql):
--   messages  in turn order up to position `cut`, each {content, name, reasoning_content, role, tool_call_id,
--             tool_calls}: `tool_calls` [{function: {arguments, name}, id, type: 'function'}] on a reply that
--             calls tools (NULL otherwise; its content may be NULL), `name` and `tool_call_id` on a tool result
--   tools     the tools offered in those messages, [{function: {description, name, parameters}, type:
--             'function'}], each name once (its first offer), in the order offered; NULL: none
-- Arguments and parameters are JSON values (a text that is not JSON, as a model may write, is kept as a JSON
-- string). The only query that reads text, from two places:
--   * snapshot_reused: the messages an earlier snapshot cut by the same code rendered from the same events
--     (fingerprint) to the same position (cut), read back from its messages files (see _Cut._canonical);
--   * for the others (snapshot_fresh), clean_messages' text, read straight from message_features
--     (clean_messages.content is message_features.clean_content by event id): their sequences already hold
--     the event ids in order, and that skips joining the messages. It reads snapshot_texts and
--     snapshot_sequences, message_features and conversation_sequences of just the data files that hold these
--     conversations (lake.views.features_of_conversations). The rest of a turn (reasoning, tool calls and
--     results, offered tools) comes from clean_messages, for just these events.
-- Both give the same bytes for the same conversation. Unordered: every reader orders by `ordinal`.
CREATE OR REPLACE TEMP TABLE snapshot_canonical AS
WITH kept AS (  -- two unnests in the select list zip; a lateral unnest (WITH ORDINALITY) planned a costly delim join
    SELECT r.ordinal, unnest(c.sequence[1:r.cut]) AS message, unnest(range(1, r.cut + 1)) AS position
    FROM snapshot_fresh r
    JOIN snapshot_sequences c USING (conversation_id)
),
parts AS (
    SELECT event_id, reasoning, tool_call_id, tool_name,
           CASE WHEN len(tool_calls) > 0 THEN list_transform(tool_calls, lambda c: {
               'function': {'arguments': coalesce(try_cast(c.arguments AS JSON), to_json(c.arguments)), 'name': c.name},
               'id': c.id, 'type': 'function'}) END AS tool_calls,
           list_transform(tools, lambda t: {
               'function': {'description': t.description, 'name': t.name,
                            'parameters': coalesce(try_cast(t.parameters AS JSON), to_json(t.parameters))},
               'type': 'function'}) AS tools
    FROM clean_messages
    WHERE event_id IN (SELECT message.event_id FROM kept)
),
texts AS (
    SELECT k.ordinal,
           list_in_order({'content': f.clean_content, 'name': p.tool_name, 'reasoning_content': p.reasoning,
                          'role': k.message.role, 'tool_call_id': p.tool_call_id, 'tool_calls': p.tool_calls},
                         k.position) AS messages,
           flatten(list_in_order(p.tools, k.position)) AS offered
    FROM kept k
    JOIN snapshot_texts f ON f.event_id = k.message.event_id
    LEFT JOIN parts p ON p.event_id = k.message.event_id
    GROUP BY k.ordinal
)
SELECT r.*, t.messages,
       CASE WHEN len(t.offered) > 0 THEN list_filter(t.offered, lambda tool, i: list_position(
           list_transform(t.offered, lambda o: o.function.name), tool.function.name) = i) END AS tools
FROM snapshot_fresh r JOIN texts t USING (ordinal)
UNION ALL BY NAME
SELECT r.*, u.messages, u.tools
FROM snapshot_render r JOIN snapshot_reused u USING (conversation_id);
