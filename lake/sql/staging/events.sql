-- events: every event exactly once, minus whatever an erasure request covers.
-- Writers skip ids already stored, so duplicates are rare (two writers racing with the same event);
-- only those ids pay for the window that keeps the first delivery. They are repeated_events, found once
-- per connection when it is bound (lake/views.py), not by every query that reads this view.
CREATE OR REPLACE VIEW events AS
WITH unique_events AS (
    SELECT * FROM raw_events WHERE event_id NOT IN (SELECT event_id FROM repeated_events)
    UNION ALL
    SELECT * FROM (
        SELECT * FROM raw_events WHERE event_id IN (SELECT event_id FROM repeated_events)
        QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY ingested_at) = 1
    )
),
erased_conversations AS (
    SELECT DISTINCT conversation_id FROM raw_events WHERE event_type = 'erasure' AND conversation_id IS NOT NULL
),
erased_users AS (
    SELECT DISTINCT user_id FROM raw_events WHERE event_type = 'erasure' AND user_id IS NOT NULL
)
SELECT * FROM unique_events e
WHERE e.event_type = 'erasure'
   OR ((e.conversation_id IS NULL OR e.conversation_id NOT IN (SELECT conversation_id FROM erased_conversations))
       AND (e.user_id IS NULL OR e.user_id NOT IN (SELECT user_id FROM erased_users)));
