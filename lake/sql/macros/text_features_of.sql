-- text_features_of(events): what the cleaning, quality, dedup and stats views need from each message's
-- text (`content`), computed once per message event of a relation (the name of a table or view of lake rows):
-- its cleaned text (clean_texts_of, which documents the redaction rules and their order) and the signals
-- read from it. message_features_of adds the message's other parts (message_parts_of).
--
-- It depends on nothing but the event's own columns, so its output for an immutable Delta data file never
-- changes: lake/views.py caches it per data file (see message_features) and only new files pay for it.
--
-- Cost shape: one DFA scan per message decides whether a message needs cleaning at all (about 1 in 7 does;
-- see clean_texts_of). Past cleaning no regex runs on every message: whether a text is indented is two
-- substring searches (is_indented()). The rest is list work on
-- the words: lower-cased words split on single spaces (the layout step guarantees those) and hashed, word
-- 3-shingles hashed from those, and a 1-in-4 consistent sample of the shingle hashes (x % 4 = 0, written
-- x & 3 = 0: the same for an unsigned hash, and cheaper) kept for near-duplicate detection: a MinHash over
-- the sample estimates the Jaccard similarity of the full shingle sets, and the signatures are 4x cheaper
-- to build. Splitting, hashing the words and the shingles' lambda (it reads three words of a captured list
-- per shingle) are the dearest steps, then counting distinct shingles (repetition), so long replies count
-- them in the sample first and only the few that look repetitive count them all.
--
-- A message without text (NULL content: a reply that only calls tools, or one that only reasons) has NULL
-- clean_content, chars and words, no shingles and no refusal or error: it is not an empty text.
--
-- `carry` names the input columns passed through, first (by default the event id, which joins the
-- features to their events; lake/views.py adds the number of the data file a row came from).
--
-- Columns:
--   clean_content   the text with placeholders, control characters out, whitespace normalised
--   redactions      STRUCT(secret, url, email, ip, iban, ssn, credit_card, phone): placeholders inserted, by type
--   redaction_rules the rule behind each placeholder: the secrets' rule names in the order of the text, then the
--                   other types' names (which rule fired on a message, without showing what it replaced)
--   content_hash    hash of the lower-cased words, single-spaced (normalised: case and whitespace ignored)
--   chars, words    length of clean_content; its word count
--   text_chars      letters, marks and whitespace in clean_content (counted only for noise suspects,
--                   see re_noise_hint(); equal to chars otherwise)
--   shingles        number of word 3-shingles (a text of 1-2 words is one shingle)
--   shingle_sample  the shingle hashes divisible by 4 (a consistent 1-in-4 sample)
--   repetition      replies only: 1 - distinct/total shingles; exact up to 64 shingles and wherever the
--                   sample's estimate (4 x its distinct values) reaches 0.2, that estimate below
--   is_refusal, is_error   replies only: the reply opens with a refusal / is an error message
CREATE OR REPLACE MACRO text_features_of(events, carry := ['event_id']) AS TABLE
WITH message_texts AS (
    SELECT COLUMNS(lambda c: c IN ('role', 'content') OR list_contains(carry, c))
    FROM query_table(events)
    WHERE event_type = 'message'
),
cleaned AS (
    SELECT * FROM clean_texts_of('message_texts', carry := list_append(carry, 'role'))
),
normalised AS (
    -- lower case, words separated by single spaces: after the layout step only line breaks are left to
    -- replace, except in a text with indentation or tabs, which takes the slower regex
    SELECT *,
           lower(CASE WHEN is_indented(clean)
                      THEN regexp_replace(clean, '\s+', ' ', 'g')
                      ELSE replace(replace(clean, e'\n\n', ' '), e'\n', ' ') END) AS normal
    FROM cleaned
),
worded AS (
    SELECT *, CASE WHEN normal = '' THEN []::UBIGINT[] ELSE list_transform(string_split(normal, ' '), lambda w: hash(w)) END AS w
    FROM normalised
),
shingled AS (
    SELECT *,
           CASE WHEN len(w) >= 3 THEN list_transform(range(1, len(w) - 1), lambda i: hash(w[i], w[i + 1], w[i + 2]))
                WHEN len(w) > 0 THEN [hash(normal)]
                ELSE []::UBIGINT[] END AS sh
    FROM worded
),
sampled AS (
    SELECT *, list_filter(sh, lambda x: x & 3 = 0) AS sample
    FROM shingled
),
estimated AS (
    SELECT *,
           CASE WHEN role = 'assistant' AND len(sh) > 64 THEN 1 - 4 * list_unique(sample) / len(sh) END AS repetition_estimate
    FROM sampled
)
SELECT COLUMNS(lambda c: list_contains(carry, c)),
       clean AS clean_content,
       redactions,
       redaction_rules,
       hash(normal) AS content_hash,
       length(clean) AS chars,
       len(w) AS words,
       CASE WHEN noisy THEN text_chars(clean) ELSE length(clean) END AS text_chars,
       len(sh) AS shingles,
       sample AS shingle_sample,
       CASE WHEN role <> 'assistant' OR len(sh) = 0 THEN NULL
            WHEN len(sh) <= 64 OR repetition_estimate >= 0.2 THEN 1 - list_unique(sh) / len(sh)
            ELSE greatest(repetition_estimate, 0) END AS repetition,
       CASE WHEN role = 'assistant' AND clean IS NOT NULL THEN regexp_matches(clean, re_refusal()) ELSE false END AS is_refusal,
       CASE WHEN role = 'assistant' AND clean IS NOT NULL THEN regexp_matches(clean, re_error_reply()) ELSE false END AS is_error
FROM estimated;
