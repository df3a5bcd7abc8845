-- clean_messages: the messages (latest state, feedback counts) with their text cleaned: PII and secrets
-- replaced by typed placeholders, control characters removed, whitespace normalised (rules and order in
-- the macro clean_texts_of). A message is kept whole: its reasoning and its tool calls' arguments are cleaned by
-- the same rules (message_parts_of; redacted arguments stay JSON), a tool's result is the `content` of a
-- `role = 'tool'` message and cleaned like any text, attachments keep their reference (sha256) with name and
-- url redacted; tool_call_id, tool_name and the offered tools (the tools' own descriptions, written by
-- whoever offered them) are shown as stored. The free-form fields that are not cleaned (metadata, feedback
-- comments) are left out, so this view is safe to export. The columns after `mean_score` are the message_features
-- the quality, dedup and stats views read: `redactions` counts the placeholders inserted, by type, in the text
-- and the parts, and `redaction_rules` names the rule behind each (which rule fired, for a false positive,
-- without the secret); `content_hash` is the hash of the normalised text (lower case, words only; with the
-- tool calls, if any) that dedup compares. A message without text (a reply that only calls tools) has NULL
-- content and chars.
CREATE OR REPLACE VIEW clean_messages AS
SELECT m.event_id, m.conversation_id, m.message_id, m.turn_index, m.role,
       f.clean_content AS content,
       f.clean_reasoning AS reasoning, f.clean_tool_calls AS tool_calls, m.tool_call_id, m.tool_name,
       f.clean_attachments AS attachments, m.tools,
       m.model, m.user_id, m.source, m.occurred_at, m.ingested_at,
       m.prompt_tokens, m.completion_tokens, m.latency_ms, m.thumbs_up, m.thumbs_down, m.mean_score,
       f.redactions, f.redaction_rules, f.content_hash, f.chars, f.words, f.text_chars, f.shingles, f.repetition,
       f.shingle_sample, f.is_refusal, f.is_error
FROM messages m
JOIN message_features f USING (event_id);
