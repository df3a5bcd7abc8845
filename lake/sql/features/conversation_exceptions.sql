-- conversation_exceptions: the conversations that conversation_features recomputes from clean_messages
-- instead of merging their partials (one per data file, see conversation_partials_of): those for which the
-- events stored are not simply their messages' latest state, because
--   * a message_id is stored more than once: a later event with the same message_id is a correction, and the
--     corrected event must not count;
--   * an event id is bound more than once (repeated_events: racing writers, or folded from the spool while
--     being read): its partials would count it twice;
--   * an erasure names the conversation, or the user of one of its messages.
-- All of them are rare, and the test may catch more than it must (it looks before the events view drops
-- duplicates and erased events): a recomputed conversation gets the same answer, only a little later.
-- Each part is a semi join whose small side is usually empty, which DuckDB answers without scanning the
-- events (an OR of IN tests scanned every message event's ids: 0.14 against 0.10 s for 1M messages).
CREATE OR REPLACE VIEW conversation_exceptions AS
WITH repeated_messages AS (
    SELECT message_id FROM raw_events WHERE event_type = 'message' GROUP BY message_id HAVING count(*) > 1
),
erasures AS (
    SELECT conversation_id, user_id FROM raw_events WHERE event_type = 'erasure'
)
SELECT conversation_id FROM raw_events SEMI JOIN repeated_messages USING (message_id)
WHERE event_type = 'message'
UNION
SELECT conversation_id FROM raw_events SEMI JOIN repeated_events USING (event_id)
WHERE event_type = 'message'
UNION
SELECT conversation_id FROM erasures WHERE conversation_id IS NOT NULL
UNION
SELECT conversation_id FROM raw_events SEMI JOIN erasures USING (user_id)
WHERE event_type = 'message';
