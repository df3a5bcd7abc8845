-- stats: the one-row overview `chatlake stats` opens with: how much there is, how much of it the cleaning,
-- quality and dedup views would keep, how much is rated, how much was redacted, how much tools are used
-- (stats_tools by tool) and how often replies reason (stats_reasoning by model).
-- Rates are shares of conversations (of turns for duplicate_turn_rate, of messages for
-- redacted_message_rate, of replies for reasoning_share). Each view is read once (running many stats
-- queries: lake.views.materialize).
CREATE OR REPLACE VIEW stats AS
WITH m AS (
    SELECT count(*) AS messages,
           count(*) FILTER (WHERE role = 'assistant') AS replies,
           count(DISTINCT user_id) AS users,
           min(occurred_at) AS first_at,
           max(occurred_at) AS last_at,
           sum(chars)::BIGINT AS chars,
           count(*) FILTER (WHERE len(redaction_rules) > 0) AS redacted_messages,
           sum(redactions.secret)::BIGINT AS secrets,
           sum(redactions.url)::BIGINT AS urls,
           sum(redactions.email)::BIGINT AS emails,
           sum(redactions.ip)::BIGINT AS ips,
           sum(redactions.iban)::BIGINT AS ibans,
           sum(redactions.ssn)::BIGINT AS ssns,
           sum(redactions.credit_card)::BIGINT AS credit_cards,
           sum(redactions.phone)::BIGINT AS phones,
           count(DISTINCT conversation_id) FILTER (WHERE tool_calls IS NOT NULL OR role = 'tool') AS tool_conversations,
           coalesce(sum(len(tool_calls)), 0)::BIGINT AS tool_calls,
           count(*) FILTER (WHERE role = 'tool' AND failed_tool_result(content)) AS failed_tool_calls,
           count(*) FILTER (WHERE role = 'assistant' AND length(reasoning) > 0) AS reasoning_replies
    FROM clean_messages
),
c AS (
    SELECT count(*) AS conversations,
           count(*) FILTER (WHERE d.duplicate_of IS NOT NULL) AS exact_duplicates,
           count(*) FILTER (WHERE d.duplicate_of IS NULL AND d.near_duplicate_of IS NOT NULL) AS near_duplicates,
           count(*) FILTER (WHERE d.is_duplicate) AS duplicates,
           count(*) FILTER (WHERE NOT q.passed) AS quality_dropped,
           count(*) FILTER (WHERE q.passed AND NOT d.is_duplicate) AS kept_conversations,
           count(*) FILTER (WHERE q.feedback <> 'none') AS rated_conversations,
           count(*) FILTER (WHERE q.feedback = 'positive') AS positive_conversations,
           count(*) FILTER (WHERE q.feedback = 'negative') AS negative_conversations
    FROM quality q
    JOIN conversation_dedup d USING (conversation_id)
),
t AS (
    SELECT count(*) AS turns, count(*) FILTER (WHERE is_duplicate) AS duplicate_turns FROM turn_dedup
)
SELECT c.conversations, m.messages, m.replies, m.users, m.first_at, m.last_at, m.chars,
       c.exact_duplicates, c.near_duplicates, c.duplicates / nullif(c.conversations, 0) AS duplicate_rate,
       t.turns, t.duplicate_turns, t.duplicate_turns / nullif(t.turns, 0) AS duplicate_turn_rate,
       c.quality_dropped, c.quality_dropped / nullif(c.conversations, 0) AS quality_drop_rate,
       c.kept_conversations, c.kept_conversations / nullif(c.conversations, 0) AS kept_rate,
       c.rated_conversations, c.rated_conversations / nullif(c.conversations, 0) AS feedback_rate,
       c.positive_conversations, c.negative_conversations,
       m.redacted_messages, m.redacted_messages / nullif(m.messages, 0) AS redacted_message_rate,
       m.secrets, m.urls, m.emails, m.ips, m.ibans, m.ssns, m.credit_cards, m.phones,
       m.tool_conversations, m.tool_conversations / nullif(c.conversations, 0) AS tool_conversation_rate,
       m.tool_calls, m.failed_tool_calls,
       m.reasoning_replies, m.reasoning_replies / nullif(m.replies, 0) AS reasoning_share
FROM m, c, t;
