-- message_features_of(events): everything the cleaning, quality, dedup and stats views need from each message,
-- one row per message event of the relation `events` (the name of a table or view of lake rows): the
-- features of its text (text_features_of) and its other parts cleaned (message_parts_of), computed once per
-- event. It depends on nothing but the event's own columns, so lake/views.py caches it per Delta data file
-- (see message_features) and only new files pay for it.
--
-- Where a message has parts, `redactions` and `redaction_rules` count the placeholders of its text and of its
-- parts (the text's rules first), and `content_hash` covers its tool calls too (names and redacted
-- arguments): two replies that call different tools are different messages, also when neither has text.
--
-- `carry` names the input columns passed through, first, as in text_features_of; the parts join by all of them
-- (the same event can come from two data files).
--
-- Columns: those of text_features_of, then clean_reasoning, clean_tool_calls and clean_attachments (NULL where
-- the message has none; see message_parts_of).
CREATE OR REPLACE MACRO message_features_of(events, carry := ['event_id']) AS TABLE
WITH texts AS (
    SELECT *, struct_pack(*COLUMNS(lambda c: list_contains(carry, c))) AS carry_key
    FROM text_features_of(events, carry := carry)
),
parts AS (
    SELECT * FROM message_parts_of(events, carry := carry)
)
SELECT t.* EXCLUDE (carry_key) REPLACE (
           CASE WHEN p.carry_key IS NULL THEN t.redactions
                ELSE {'secret': t.redactions.secret + p.redactions.secret, 'url': t.redactions.url + p.redactions.url,
                      'email': t.redactions.email + p.redactions.email, 'ip': t.redactions.ip + p.redactions.ip,
                      'iban': t.redactions.iban + p.redactions.iban, 'ssn': t.redactions.ssn + p.redactions.ssn,
                      'credit_card': t.redactions.credit_card + p.redactions.credit_card,
                      'phone': t.redactions.phone + p.redactions.phone} END AS redactions,
           CASE WHEN p.carry_key IS NULL THEN t.redaction_rules
                ELSE list_concat(t.redaction_rules, p.redaction_rules) END AS redaction_rules,
           CASE WHEN p.clean_tool_calls IS NULL THEN t.content_hash
                ELSE hash(t.content_hash, list_transform(p.clean_tool_calls, lambda c: [c.name, c.arguments])) END AS content_hash),
       p.clean_reasoning, p.clean_tool_calls, p.clean_attachments
FROM texts t
LEFT JOIN parts p ON t.carry_key = p.carry_key;
