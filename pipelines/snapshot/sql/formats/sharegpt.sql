-- sharegpt: one row per conversation, multi-turn, in LLaMA-Factory's layout: `conversations` a list of
-- {from, value} with the speakers human, gpt and system; a reply that calls tools is a `function_call` turn
-- whose value is the call as JSON {"name", "arguments"} (a list of them for parallel calls; the text a reply
-- has beside its calls has no place there and is left out), tool results are `observation` turns (the
-- results of parallel calls, which follow one another, make one turn, joined by newlines: LLaMA-Factory
-- alternates the speakers), and `tools` is the offered tools as JSON text, a list of {name, description,
-- parameters} (NULL: none). With snapshot.train_on_reasoning a reply's reasoning opens its value as
-- <think>...</think> (LLaMA-Factory's thought words); without, it is left out.
SELECT conversation_id,
       list_transform(
           list_filter(range(1, len(messages) + 1),  -- a result that follows a result is in its turn
                       lambda i: messages[i].role <> 'tool' OR i = 1 OR messages[i - 1].role <> 'tool'),
           lambda i: {'from': CASE messages[i].role WHEN 'user' THEN 'human' WHEN 'tool' THEN 'observation'
                                   WHEN 'assistant' THEN CASE WHEN messages[i].tool_calls IS NOT NULL
                                                              THEN 'function_call' ELSE 'gpt' END
                                   ELSE messages[i].role END,
                      'value': CASE
                          WHEN messages[i].role = 'tool' THEN array_to_string(list_transform(
                              messages[i:i - 1 + coalesce(list_position(list_transform(messages[i:],
                                  lambda m: m.role <> 'tool'), true) - 1, len(messages) - i + 1)],
                              lambda m: m.content), chr(10))
                          WHEN messages[i].role = 'assistant' THEN concat(
                              CASE WHEN getvariable('snapshot_reasoning') AND messages[i].reasoning_content IS NOT NULL
                                   THEN concat('<think>', chr(10), messages[i].reasoning_content, chr(10), '</think>',
                                               chr(10), chr(10)) END,
                              CASE WHEN len(messages[i].tool_calls) = 1
                                   THEN json_object('name', messages[i].tool_calls[1].function.name,
                                                    'arguments', messages[i].tool_calls[1].function.arguments)::VARCHAR
                                   WHEN messages[i].tool_calls IS NOT NULL
                                   THEN to_json(list_transform(messages[i].tool_calls, lambda c: json_object(
                                       'name', c.function.name, 'arguments', c.function.arguments)))::VARCHAR
                                   ELSE messages[i].content END)
                          ELSE messages[i].content END}) AS conversations,
       prefix_tokens[len(messages)] AS num_tokens,
       CASE WHEN tools IS NOT NULL THEN to_json(list_transform(tools, lambda t: json_object(
           'name', t.function.name, 'description', t.function.description,
           'parameters', t.function.parameters)))::VARCHAR END AS tools
FROM snapshot_canonical
ORDER BY ordinal
