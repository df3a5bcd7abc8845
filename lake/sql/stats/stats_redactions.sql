-- stats_redactions: placeholders inserted by clean_messages, by rule (each secret rule of lake/redaction's
-- table by name, the other types as one rule each): how many, in how many messages, and the share of
-- messages that had one. Every rule has a row, also at zero.
CREATE OR REPLACE VIEW stats_redactions AS
WITH rules AS (
    SELECT unnest(secret_rule_names()) AS rule, 'secret' AS type
    UNION ALL
    SELECT unnest(['url', 'email', 'ip', 'iban', 'ssn', 'credit_card', 'phone']) AS rule, rule AS type
),
fired AS (
    SELECT message_id, unnest(redaction_rules) AS rule
    FROM clean_messages
    WHERE len(redaction_rules) > 0
),
counts AS (
    SELECT rule, count(*) AS redactions, count(DISTINCT message_id) AS messages
    FROM fired
    GROUP BY rule
)
SELECT r.type, r.rule,
       coalesce(c.redactions, 0) AS redactions,
       coalesce(c.messages, 0) AS messages,
       coalesce(c.messages, 0) / (SELECT count(*) FROM clean_messages) AS message_share
FROM rules r
LEFT JOIN counts c USING (rule)
ORDER BY redactions DESC, type, rule;
