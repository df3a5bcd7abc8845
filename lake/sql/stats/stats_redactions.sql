-- stats_redactions: placeholders inserted by clean_messages, by type: how many, in how many messages, and
-- the share of messages that had one.
CREATE OR REPLACE VIEW stats_redactions AS
WITH per_message AS (
    SELECT unnest([{'type': 'secret', 'n': redactions.secret},
                   {'type': 'url', 'n': redactions.url},
                   {'type': 'email', 'n': redactions.email},
                   {'type': 'ip', 'n': redactions.ip},
                   {'type': 'credit_card', 'n': redactions.credit_card},
                   {'type': 'phone', 'n': redactions.phone}], recursive := true)
    FROM clean_messages
)
SELECT type,
       sum(n)::BIGINT AS redactions,
       count(*) FILTER (WHERE n > 0) AS messages,
       count(*) FILTER (WHERE n > 0) / count(*) AS message_share
FROM per_message
GROUP BY type
ORDER BY redactions DESC, type;
