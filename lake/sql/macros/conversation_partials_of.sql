CREATE OR REPLACE MACRO conversation_partials_of(messages) AS TABLE
WITH aggregated AS (
    SELECT m.conversation_id,
           count(*) AS messages,
           count(*) FILTER (WHERE m.role = 'assistant') AS replies,
           min(m.occurred_at) AS first_at,
           max(m.occurred_at) AS last_at,
           min(m.user_id) AS user_id,
           list_sort(list_distinct(list(m.model))) AS models,
           list_sort(list_distinct(list(m.source))) AS sources,
           sum(m.chars)::BIGINT AS chars,
           sum(m.shingles)::BIGINT AS shingles,
           -- a reply that calls tools is a step, not an answer: it may well have no text
           min(coalesce(m.chars, 0)) FILTER (WHERE m.role = 'assistant' AND m.tool_calls IS NULL) AS shortest_reply,
           max(m.repetition) AS repetition,
           -- a tool's result is often JSON or figures: symbols are not noise there
           min(m.text_chars / m.chars) FILTER (WHERE m.chars >= 20 AND m.role <> 'tool') AS text_ratio,
           bool_or(m.is_refusal) AS refusal,
           bool_or(m.is_error) AS error_reply,
           bit_xor(hash(m.turn_index, m.role, m.content_hash)) AS content_hash,
           -- one md5 per event, split (md5_number_upper and _lower took four times as long; bit_xor of a
           -- UHUGEINT thirty times)
           bit_xor((m.event_md5 >> 64)::UBIGINT) AS events_hash_high,
           bit_xor((m.event_md5 & 18446744073709551615::UHUGEINT)::UBIGINT) AS events_hash_low,
           list_sort(list({'turn_index': m.turn_index, 'message_id': m.message_id, 'event_id': m.event_id,
                           'role': m.role})) AS sequence,
           list_sort(flatten(list(m.shingle_sample))) AS sample,
           coalesce(flatten(list(list_transform(m.tool_calls, lambda c: {'turn_index': m.turn_index,
                                                                          'message_id': m.message_id, 'id': c.id}))
                            FILTER (WHERE m.tool_calls IS NOT NULL)), []) AS calls,
           coalesce(list({'turn_index': m.turn_index, 'message_id': m.message_id, 'id': m.tool_call_id})
                    FILTER (WHERE m.role = 'tool'), []) AS results
    FROM (SELECT *, md5_number(event_id) AS event_md5 FROM query_table(messages)) m
    GROUP BY m.conversation_id
),
signed AS MATERIALIZED (  -- read twice: the rows, and signature_bands()
    SELECT * EXCLUDE (sample), CASE WHEN len(sample) > 0 THEN bin_minima(sample) END AS signature,
           unnest(sequence_positions(sequence)),
           {'turn_index': sequence[1].turn_index, 'message_id': sequence[1].message_id} AS first_key,
           {'turn_index': sequence[-1].turn_index, 'message_id': sequence[-1].message_id} AS last_key,
           sequence[1].role AS first_role, sequence[-1].role AS last_role
    FROM aggregated
)
SELECT s.*, b.bands
FROM signed s LEFT JOIN signature_bands(signed) b USING (conversation_id);
