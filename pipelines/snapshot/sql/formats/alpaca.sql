-- alpaca: one row per reply (see snapshot_replies). `instruction` is the user message it answers, `output` the
-- reply, `input` empty; earlier exchanges go to `history` as [user, assistant] pairs and system messages to
-- `system` (the extended Alpaca layout LLaMA-Factory reads). Alpaca has no place for tool calls or results:
-- a reply that calls tools, or that tool calls or results come before, gives no example (the manifest's
-- summary counts them in left_out; the tools on offer alone do not matter). With snapshot.train_on_reasoning
-- the reply's reasoning opens `output` as <think>...</think>; without, it is left out.
SELECT conversation_id,
       list_transform(list_filter(range(1, i - 1), lambda j: messages[j].role = 'user'
                                                             AND messages[j + 1].role = 'assistant'),
                      lambda j: [messages[j].content, messages[j + 1].content]) AS history,
       '' AS input,
       messages[i - 1].content AS instruction,
       prefix_tokens[i] AS num_tokens,
       concat(CASE WHEN getvariable('snapshot_reasoning') AND messages[i].reasoning_content IS NOT NULL
                   THEN concat('<think>', chr(10), messages[i].reasoning_content, chr(10), '</think>', chr(10), chr(10))
              END, messages[i].content) AS output,
       array_to_string(list_transform(list_filter(messages[1:i - 2], lambda m: m.role = 'system'),
                                      lambda m: m.content), chr(10) || chr(10)) AS system
FROM snapshot_replies
WHERE len(list_filter(messages[1:i], lambda m: m.role = 'tool' OR m.tool_calls IS NOT NULL)) = 0
ORDER BY ordinal, i
