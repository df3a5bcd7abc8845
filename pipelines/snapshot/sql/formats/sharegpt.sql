-- sharegpt: one row per conversation, multi-turn, `conversations` a list of {from, value} with the usual
-- speaker names: human, gpt, system, and observation for tool results (LLaMA-Factory's convention).
SELECT conversation_id,
       list_transform(messages, lambda m: {'from': CASE m.role WHEN 'user' THEN 'human' WHEN 'assistant' THEN 'gpt'
                                                               WHEN 'tool' THEN 'observation' ELSE m.role END,
                                           'value': m.content}) AS conversations,
       prefix_tokens[len(messages)] AS num_tokens
FROM snapshot_canonical
ORDER BY ordinal
