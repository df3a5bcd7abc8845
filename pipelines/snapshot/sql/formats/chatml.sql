-- chatml: one row per conversation, the whole conversation as one ChatML text
-- (`<|im_start|>{role}\n{content}<|im_end|>\n` per message), for trainers that take plain text.
SELECT conversation_id,
       -- concat() builds each message's text in one allocation; a chain of || copies it at every step
       array_to_string(list_transform(messages, lambda m: concat('<|im_start|>', m.role, chr(10), m.content,
                                                                 '<|im_end|>', chr(10))), '') AS text,
       prefix_tokens[len(messages)] AS num_tokens
FROM snapshot_canonical
ORDER BY ordinal
