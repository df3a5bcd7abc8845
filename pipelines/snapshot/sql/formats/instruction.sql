-- instruction: prompt/completion pairs, one row per reply (see snapshot_replies), in TRL's conversational
-- prompt-completion layout: `prompt` is every message before the reply (system, earlier turns, the user
-- message), `completion` the reply alone. The trainer applies the model's chat template and can train on the
-- completion only.
SELECT [messages[i]] AS completion,
       conversation_id,
       prefix_tokens[i] AS num_tokens,
       messages[1:i - 1] AS prompt
FROM snapshot_replies
ORDER BY ordinal, i
