-- alpaca: one row per reply (see snapshot_replies). `instruction` is the user message it answers, `output` the
-- reply, `input` empty; earlier exchanges go to `history` as [user, assistant] pairs and system messages to
-- `system` (the extended Alpaca layout LLaMA-Factory reads). Tool messages have no place in it and are left out.
SELECT conversation_id,
       list_transform(list_filter(range(1, i - 1), lambda j: messages[j].role = 'user'
                                                             AND messages[j + 1].role = 'assistant'),
                      lambda j: [messages[j].content, messages[j + 1].content]) AS history,
       '' AS input,
       messages[i - 1].content AS instruction,
       prefix_tokens[i] AS num_tokens,
       messages[i].content AS output,
       array_to_string(list_transform(list_filter(messages[1:i - 2], lambda m: m.role = 'system'),
                                      lambda m: m.content), chr(10) || chr(10)) AS system
FROM snapshot_replies
ORDER BY ordinal, i
