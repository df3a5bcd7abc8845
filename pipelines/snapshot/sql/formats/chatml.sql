-- chatml: one row per conversation, the whole conversation as one ChatML text
-- (`<|im_start|>{role}\n{content}<|im_end|>\n` per message), for trainers that take plain text. When the
-- snapshot has a tokenizer, its own chat template writes the text instead (formats.Rendering), and this is
-- not run. Tool turns the Hermes/Qwen2.5 way: the tools offered open the text as a system turn,
-- `<tools>\n{tool JSON}\n...\n</tools>`, one tool a line; a reply's calls follow its text, one
-- `<tool_call>\n{"name": ..., "arguments": ...}\n</tool_call>` each, on lines of their own; a tool result is a
-- tool turn `<tool_response>\n{content}\n</tool_response>`. With snapshot.train_on_reasoning a reply's
-- reasoning opens it as `<think>\n{reasoning}\n</think>\n\n`; without, it is left out.
SELECT conversation_id,
       -- concat() builds each message's text in one allocation; a chain of || copies it at every step
       concat(CASE WHEN tools IS NOT NULL
                   THEN concat('<|im_start|>system', chr(10), '<tools>', chr(10),
                               array_to_string(list_transform(tools, lambda t: to_json(t)::VARCHAR), chr(10)),
                               chr(10), '</tools><|im_end|>', chr(10)) END,
              array_to_string(list_transform(messages, lambda m: concat('<|im_start|>', m.role, chr(10),
                  CASE WHEN m.tool_calls IS NOT NULL
                            OR (getvariable('snapshot_reasoning') AND m.reasoning_content IS NOT NULL)
                       THEN concat_ws(chr(10),
                                CASE WHEN getvariable('snapshot_reasoning') AND m.reasoning_content IS NOT NULL
                                     THEN concat('<think>', chr(10), m.reasoning_content, chr(10), '</think>', chr(10)) END,
                                nullif(m.content, ''),
                                array_to_string(list_transform(m.tool_calls, lambda c: concat(
                                    '<tool_call>', chr(10), json_object('name', c.function.name,
                                                                        'arguments', c.function.arguments),
                                    chr(10), '</tool_call>')), chr(10)))
                       WHEN m.role = 'tool' THEN concat('<tool_response>', chr(10), m.content, chr(10), '</tool_response>')
                       ELSE m.content END,
                  '<|im_end|>', chr(10))), '')) AS text,
       prefix_tokens[len(messages)] AS num_tokens
FROM snapshot_canonical
ORDER BY ordinal
