-- conversation_sequences: each conversation's messages in turn order (turn_index, then message_id), as a list
-- of {turn_index, message_id, event_id, role}: what a snapshot renders, by event id. Merged from
-- conversation_partials like conversation_features, which keeps only the positions a snapshot reads of it
-- (sequence_positions: last_reply, reply_positions).
--
-- conversation_sequences_in(cached): the same from the cache entries of the relation `cached` (see
-- conversation_partials_in): a snapshot that renders a few conversations reads the sequences of a few files.
CREATE OR REPLACE MACRO conversation_sequences_in(cached) AS TABLE
WITH partials AS MATERIALIZED (  -- read once (and bound once: each mention of a view binds its whole tree)
    SELECT conversation_id, sequence FROM conversation_partials_in(cached)
),
spread AS (
    SELECT conversation_id FROM partials GROUP BY conversation_id HAVING count(*) > 1
)
SELECT conversation_id, sequence FROM partials ANTI JOIN spread USING (conversation_id)
UNION ALL
SELECT conversation_id, list_sort(flatten(list(sequence))) AS sequence
FROM partials SEMI JOIN spread USING (conversation_id)
GROUP BY conversation_id;
