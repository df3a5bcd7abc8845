-- messages: the canonical format (OpenAI / Hugging Face conversational), whole turns as transformers' chat
-- templates take them: apply_chat_template(messages, tools=tools). One row per conversation, multi-turn as it
-- happened, ending with an assistant reply. `messages` is a list of {content, name, reasoning_content, role,
-- tool_call_id, tool_calls}: a reply that calls tools has `tool_calls` [{function: {arguments, name}, id,
-- type}] (and maybe no content), a tool result (role tool) the `name` of its function and the `tool_call_id`
-- of the call it answers, and `reasoning_content` is a reply's reasoning (the name the Qwen3 and DeepSeek-R1
-- templates read), kept whatever snapshot.train_on_reasoning says. `tools` is the list of tools offered,
-- [{function: {description, name, parameters}, type}] (NULL: none). Arguments and parameters are JSON values.
SELECT conversation_id, messages, prefix_tokens[len(messages)] AS num_tokens, tools
FROM snapshot_canonical
ORDER BY ordinal
