-- instruction: prompt/completion pairs, one row per reply (see snapshot_replies), in TRL's conversational
-- prompt-completion layout: `prompt` is every message before the reply (system, earlier turns, the user
-- message), `completion` the reply alone. The trainer applies the model's chat template and can train on the
-- completion only. Tool turns are kept as in the messages format: a reply that calls tools is a completion of
-- tool calls, earlier calls and results are in the prompt, and `tools` holds the tools offered.
SELECT [messages[i]] AS completion,
       conversation_id,
       prefix_tokens[i] AS num_tokens,
       messages[1:i - 1] AS prompt,
       tools
FROM snapshot_replies
ORDER BY ordinal, i
