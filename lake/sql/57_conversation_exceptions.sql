-- conversation_exceptions: the conversations that conversation_features recomputes from clean_messages
-- instead of merging their partials (one per data file, see conversation_partials_of): those for which the
-- events stored are not simply their messages' latest state, because
--   * a message_id is stored more than once (a later event with the same message_id is a correction, and
--     the corrected event must not count);
--   * an event id is bound more than once (repeated_events: racing writers, or folded from the spool while
--     being read): its partials would count it twice;
--   * an erasure names the conversation, or the user of one of its messages.
-- All of them are rare, and the test may catch more than it must (it looks before the events view drops
-- duplicates and erased events): a recomputed conversation gets the same answer, only a little later.
CREATE OR REPLACE VIEW conversation_exceptions AS
WITH message_events AS (
    SELECT event_id, conversation_id, message_id, user_id FROM raw_events WHERE event_type = 'message'
),
erasures AS (
    SELECT conversation_id, user_id FROM raw_events WHERE event_type = 'erasure'
)
SELECT DISTINCT conversation_id
FROM message_events
WHERE message_id IN (SELECT message_id FROM message_events GROUP BY message_id HAVING count(*) > 1)
   OR event_id IN (SELECT event_id FROM repeated_events)
   OR conversation_id IN (SELECT conversation_id FROM erasures)
   OR user_id IN (SELECT user_id FROM erasures);

-- conversation_exception_messages: their clean_messages. When materialize() (lake/views.py) finds no
-- exceptions it shadows this view with an empty one, so the messages view is not evaluated for nothing.
CREATE OR REPLACE VIEW conversation_exception_messages AS
SELECT * FROM clean_messages SEMI JOIN conversation_exceptions USING (conversation_id);
