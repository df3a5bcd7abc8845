-- message_parts_of(events): the parts of each message besides its text, cleaned by the rules its text is
-- cleaned by (clean_texts_of), one row per message event of the relation `events` that has any: its
-- reasoning, the arguments of its tool calls, the names and URLs of its attachments. (A tool's result is the
-- text of a `role = 'tool'` message: text_features_of cleans it.)
--
-- Set-shaped: the few messages that have parts are unnested into one row per text, the rows go through the
-- cleaning chain together and are put back together by message (`carry_key`: the carried columns, as
-- message_features_of joins them).
--   * reasoning is cleaned as text (placeholders, control characters, layout);
--   * a call's arguments are JSON text: they are cleaned with their escapes hidden (json_escapes_hidden), and
--     stay as written unless a placeholder went in. A placeholder is JSON-safe inside a string, one outside
--     (a card number written as a number) is made a string (json_placeholders_quoted), and the rules stop at
--     a quote, so redacted arguments are JSON where the original was; should a rule ever break them (a value
--     the rules take across a quote), they become one JSON string of the cleaned text, never invalid JSON;
--   * an attachment's name and url stay as written unless a placeholder went in (the bytes are referenced
--     by sha256, which is not text).
--
-- Columns: carry_key, then
--   redactions         STRUCT(secret, url, ...) of the placeholders inserted in these parts, by type
--   redaction_rules    their rules, in order: reasoning, each call's arguments, each attachment's name and url
--   clean_reasoning    the cleaned reasoning (NULL: none)
--   clean_tool_calls   the calls, {id, name, arguments} with the arguments redacted (NULL: none)
--   clean_attachments  the attachments, {kind, mime_type, sha256, size, name, url} with name and url redacted (NULL: none)
CREATE OR REPLACE MACRO message_parts_of(events, carry := ['event_id']) AS TABLE
WITH whole AS MATERIALIZED (
    SELECT struct_pack(*COLUMNS(lambda c: list_contains(carry, c))) AS carry_key, reasoning, tool_calls, attachments
    FROM query_table(events)
    WHERE event_type = 'message' AND (reasoning IS NOT NULL OR tool_calls IS NOT NULL OR attachments IS NOT NULL)
),
attached AS (
    SELECT carry_key, unnest(list_transform(attachments, lambda a, i: {'no': i, 'name': a.name, 'url': a.url})) AS a
    FROM whole
),
part_texts AS (  -- part 1: reasoning, 2: a call's arguments, 3/4: an attachment's name/url; no: which call or attachment
    SELECT carry_key, 1 AS part, 1 AS no, reasoning AS original, reasoning AS content FROM whole WHERE reasoning IS NOT NULL
    UNION ALL
    SELECT carry_key, 2, c.no, c.arguments, json_escapes_hidden(c.arguments)
    FROM (SELECT carry_key, unnest(list_transform(tool_calls, lambda x, i: {'no': i, 'arguments': x.arguments})) AS c
          FROM whole)
    UNION ALL
    SELECT carry_key, 3, a.no, a.name, a.name FROM attached
    UNION ALL
    SELECT carry_key, 4, a.no, a.url, a.url FROM attached
),
cleaned AS (
    SELECT *, CASE WHEN part = 2 AND len(redaction_rules) > 0
                   THEN json_escapes_shown(json_placeholders_quoted(clean)) END AS arguments
    FROM clean_texts_of('part_texts', carry := ['carry_key', 'part', 'no', 'original'])
),
part_values AS (
    SELECT carry_key, part, no, redactions, redaction_rules,
           CASE WHEN part = 1 THEN clean
                WHEN len(redaction_rules) = 0 THEN original
                WHEN part = 2 AND json_valid(original) AND NOT json_valid(arguments) THEN to_json(arguments)::VARCHAR
                WHEN part = 2 THEN arguments
                ELSE clean END AS value
    FROM cleaned
),
assembled AS (
    SELECT carry_key,
           {'secret': sum(redactions.secret)::INTEGER, 'url': sum(redactions.url)::INTEGER,
            'email': sum(redactions.email)::INTEGER, 'ip': sum(redactions.ip)::INTEGER,
            'iban': sum(redactions.iban)::INTEGER, 'ssn': sum(redactions.ssn)::INTEGER,
            'credit_card': sum(redactions.credit_card)::INTEGER, 'phone': sum(redactions.phone)::INTEGER} AS redactions,
           flatten(list(redaction_rules ORDER BY part, no)) AS redaction_rules,
           any_value(value) FILTER (WHERE part = 1) AS reasoning,
           list(value ORDER BY no) FILTER (WHERE part = 2) AS arguments,
           list(value ORDER BY no) FILTER (WHERE part = 3) AS names,
           list(value ORDER BY no) FILTER (WHERE part = 4) AS urls
    FROM part_values
    GROUP BY carry_key
)
SELECT w.carry_key, a.redactions, a.redaction_rules,
       a.reasoning AS clean_reasoning,
       list_transform(w.tool_calls, lambda c, i: {'id': c.id, 'name': c.name, 'arguments': a.arguments[i]}) AS clean_tool_calls,
       list_transform(w.attachments, lambda x, i: {'kind': x.kind, 'mime_type': x.mime_type, 'sha256': x.sha256,
                                                    'size': x.size, 'name': a.names[i], 'url': a.urls[i]}) AS clean_attachments
FROM whole w JOIN assembled a USING (carry_key);
