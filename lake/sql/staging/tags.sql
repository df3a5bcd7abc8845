-- tags: the labels currently on each conversation or message (the latest tag event decides).
CREATE OR REPLACE VIEW tags AS
SELECT conversation_id, message_id, tag, occurred_at AS tagged_at
FROM (
    SELECT * FROM events WHERE event_type = 'tag'
    QUALIFY row_number() OVER (PARTITION BY conversation_id, message_id, tag ORDER BY occurred_at DESC, event_id DESC) = 1
)
WHERE NOT coalesce(removed, false);
