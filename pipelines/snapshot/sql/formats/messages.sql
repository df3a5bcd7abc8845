-- messages: the canonical format (OpenAI / Hugging Face conversational). One row per conversation, multi-turn
-- as it happened, `messages` a list of {role, content} ending with an assistant reply.
SELECT conversation_id, messages, prefix_tokens[len(messages)] AS num_tokens
FROM snapshot_canonical
ORDER BY ordinal
