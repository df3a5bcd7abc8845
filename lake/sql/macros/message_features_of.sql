-- message_features_of(events): what the cleaning, quality, dedup and stats views need from each message's
-- text, computed once per message event of a relation (the name of a table or view of lake rows).
--
-- Redaction: the rules are macros, one file each in this folder (re_url, re_email, re_ip, re_iban, re_ssn,
-- re_card, re_phone and their hints), and the secret rules a table (lake/redaction/secrets.yml) that
-- lake.redaction turns into the macros re_secret_hint() and redact_secrets(); the cleaning SQL, the tests and the
-- benchmark's plain-Python reference all read the same text (RE2 syntax that Python's `re` also accepts once
-- `\x{...}` is spelled `\U...`).
-- Cheap hints come with the patterns: a regex scan that only answers "is there anything?" runs as a DFA at
-- memory speed, while a replacement that extracts matches is ~10x slower per byte; so every message is
-- scanned once with re_work() and only the few that match go through the replacements.
--
-- Placeholders, applied in this order (earlier ones protect their text from later ones):
--   <SECRET>  each rule of the secrets table whose keyword the text holds, in the table's order (private
--             keys, GitHub, GitLab, Slack, Stripe, AWS, Google, Azure, OpenAI, Anthropic, Hugging Face, npm,
--             PyPI, Twilio, SendGrid, Mailgun, Shopify, DigitalOcean, Databricks, Discord, Telegram, JWTs,
--             passwords in URLs (user:<SECRET>@host), bearer tokens, credential assignments); each leaves a
--             tag naming it, read into redaction_rules and removed
--   <URL>     scheme://... and www.... (a URL whose password was redacted stays one <URL>)
--   <EMAIL>   name@domain.tld
--   <IP>      IPv4, IPv6 (full, or compressed with a digit in its first group: C++ `std::` stays)
--   <IBAN>    IBANs (plain or in groups of four) whose check digits are right (mod 97)
--   <SSN>     US social security numbers right after their words (SSN, social security), never-issued ones stay
--   <CREDIT_CARD> 13-19 digits (single spaces or dashes between) that pass the Luhn check; others stay
--   <PHONE>   what libphonenumber calls a valid number among the digit runs written like phone numbers
--             (phone_numbers(), a Python function lake.redaction registers on the connection; it is called
--             only for the rows that have candidates): national numbers of the configured region, and
--             numbers of any region written with + or 00 (dates, versions, sums and card-like runs stay)
--
-- It depends on nothing but the event's own columns, so its output for an immutable Delta data file never
-- changes: lake/views.py caches it per data file (see message_features) and only new files pay for it.
--
-- Cost shape: one DFA scan per message (re_work() and re_noise_hint() in one pattern) decides whether a
-- message needs cleaning at all (about 1 in 7 does); only those run the replacement chain, each step
-- behind its own hint. A hint is a regex scan too (~3 ns a byte, whatever the pattern), so none is run
-- where its answer is already known: the digits hint serves both the card and the phone step (a text no
-- card was taken from still matches it), and a step that left its text unchanged inserted no placeholder
-- (counting them replaces and measures whole texts, 3 passes each). Past cleaning no regex runs on every
-- message: whether a text is indented is two substring searches (is_indented()). The rest is list work on
-- the words: lower-cased words split on single spaces (the layout step guarantees those) and hashed, word
-- 3-shingles hashed from those, and a 1-in-4 consistent sample of the shingle hashes (x % 4 = 0, written
-- x & 3 = 0: the same for an unsigned hash, and cheaper) kept for near-duplicate detection: a MinHash over
-- the sample estimates the Jaccard similarity of the full shingle sets, and the signatures are 4x cheaper
-- to build. Splitting, hashing the words and the shingles' lambda (it reads three words of a captured list
-- per shingle) are the dearest steps, then counting distinct shingles (repetition), so long replies count
-- them in the sample first and only the few that look repetitive count them all.
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
CREATE OR REPLACE MACRO message_features_of(events, carry := ['event_id']) AS TABLE
WITH scanned AS (
    SELECT COLUMNS(lambda c: c IN ('role', 'content') OR list_contains(carry, c)),
           regexp_matches(content, re_work() || '|' || re_noise_hint()) AS suspect
    FROM query_table(events)
    WHERE event_type = 'message'
),
flagged AS (  -- CASE, not AND: only a CASE branch skips the rows it does not apply to
    SELECT * EXCLUDE (suspect),
           CASE WHEN suspect THEN regexp_matches(content, re_work()) ELSE false END AS dirty,
           CASE WHEN suspect THEN regexp_matches(content, re_noise_hint()) ELSE false END AS noisy
    FROM scanned
),
characters AS (
    SELECT *,
           CASE WHEN dirty AND regexp_matches(content, re_characters_hint())
                THEN regexp_replace(regexp_replace(replace(replace(content, e'\r\n', e'\n'), e'\r', e'\n'),
                                                   re_control(), '', 'g'),
                                    re_space(), ' ', 'g')
                ELSE content END AS t0
    FROM flagged
),
secrets AS (  -- each rule leaves its tag before its placeholder (lake/redaction): read, then removed
    SELECT *,
           CASE WHEN dirty AND regexp_matches(t0, re_secret_hint()) THEN redact_secrets(t0) ELSE t0 END AS tagged
    FROM characters
),
untagged AS (
    SELECT * EXCLUDE (tagged),
           CASE WHEN tagged = t0 THEN []::VARCHAR[] ELSE regexp_extract_all(tagged, re_rule_tag(), 1) END AS secret_rules,
           CASE WHEN tagged = t0 THEN t0 ELSE regexp_replace(tagged, re_rule_tag(), '', 'g') END AS t1
    FROM secrets
),
urls AS (
    SELECT *,
           CASE WHEN dirty AND regexp_matches(t1, re_url_hint())
                THEN regexp_replace(t1, re_url(), '<URL>', 'g') ELSE t1 END AS t2
    FROM untagged
),
emails AS (
    SELECT *,
           CASE WHEN dirty AND regexp_matches(t2, re_email_hint())
                THEN regexp_replace(t2, re_email(), '<EMAIL>', 'g') ELSE t2 END AS t3
    FROM urls
),
ips AS (
    SELECT *,
           CASE WHEN dirty AND regexp_matches(t3, re_ip_hint())
                THEN regexp_replace(t3, re_ip(), '<IP>', 'g') ELSE t3 END AS t4
    FROM emails
),
ibans AS (
    SELECT *,
           CASE WHEN dirty AND regexp_matches(t4, re_iban_hint())
                THEN replace_each(t4, list_filter(regexp_extract_all(t4, re_iban()), lambda c: iban_valid(c)), '<IBAN>')
                ELSE t4 END AS t5
    FROM ips
),
ssns AS (
    SELECT *,
           CASE WHEN dirty AND regexp_matches(t5, re_ssn_hint())
                THEN replace_each(t5, list_filter(regexp_extract_all(t5, re_ssn(), 1), lambda c: ssn_valid(c)), '<SSN>')
                ELSE t5 END AS t6
    FROM ibans
),
digits AS (  -- the hint of both the card and the phone step, scanned once
    SELECT *, CASE WHEN dirty THEN regexp_matches(t6, re_digits_hint()) ELSE false END AS digits
    FROM ssns
),
cards AS (
    SELECT *,
           CASE WHEN digits
                THEN replace_each(t6, list_filter(regexp_extract_all(t6, re_card()), lambda c: luhn_valid(c)),
                                  '<CREDIT_CARD>')
                ELSE t6 END AS t7
    FROM digits
),
phone_candidates AS (  -- no card taken (t7 = t6): t7 is known to match the digits hint, as t6 did
    SELECT *,
           CASE WHEN digits AND (t7 = t6 OR regexp_matches(t7, re_digits_hint()))
                THEN list_filter(regexp_extract_all(t7, re_phone()), lambda c: phone_candidate(c))
                ELSE []::VARCHAR[] END AS candidates
    FROM cards
),
phones AS (  -- phone_numbers(): libphonenumber, registered by lake.redaction, called for rows with candidates only
    SELECT * EXCLUDE (candidates),
           CASE WHEN len(candidates) > 0 THEN replace_each(t7, phone_numbers(candidates), '<PHONE>')
                ELSE t7 END AS t8
    FROM phone_candidates
),
counted AS (
    SELECT *,
           CASE WHEN dirty THEN {  -- a step that changed nothing inserted nothing
                    'secret': len(secret_rules),
                    'url': CASE WHEN t2 = t1 THEN 0 ELSE count_of(t2, '<URL>') - count_of(t1, '<URL>') END,
                    'email': CASE WHEN t3 = t2 THEN 0 ELSE count_of(t3, '<EMAIL>') - count_of(t2, '<EMAIL>') END,
                    'ip': CASE WHEN t4 = t3 THEN 0 ELSE count_of(t4, '<IP>') - count_of(t3, '<IP>') END,
                    'iban': CASE WHEN t5 = t4 THEN 0 ELSE count_of(t5, '<IBAN>') - count_of(t4, '<IBAN>') END,
                    'ssn': CASE WHEN t6 = t5 THEN 0 ELSE count_of(t6, '<SSN>') - count_of(t5, '<SSN>') END,
                    'credit_card': CASE WHEN t7 = t6 THEN 0
                                        ELSE count_of(t7, '<CREDIT_CARD>') - count_of(t6, '<CREDIT_CARD>') END,
                    'phone': CASE WHEN t8 = t7 THEN 0 ELSE count_of(t8, '<PHONE>') - count_of(t7, '<PHONE>') END}
                ELSE {'secret': 0, 'url': 0, 'email': 0, 'ip': 0, 'iban': 0, 'ssn': 0, 'credit_card': 0, 'phone': 0}
                END AS redactions
    FROM phones
),
cleaned AS (
    SELECT COLUMNS(lambda c: c = 'role' OR list_contains(carry, c)), noisy, redactions,
           CASE WHEN dirty AND regexp_matches(t8, re_layout_hint()) THEN normalise_layout(t8) ELSE t8 END AS clean,
           CASE WHEN t8 = t1 THEN secret_rules  -- the rule of each placeholder: secrets by rule, the rest by type
                ELSE list_concat(secret_rules, list_resize([]::VARCHAR[], redactions.url, 'url'),
                                 list_resize([]::VARCHAR[], redactions.email, 'email'),
                                 list_resize([]::VARCHAR[], redactions.ip, 'ip'),
                                 list_resize([]::VARCHAR[], redactions.iban, 'iban'),
                                 list_resize([]::VARCHAR[], redactions.ssn, 'ssn'),
                                 list_resize([]::VARCHAR[], redactions.credit_card, 'credit_card'),
                                 list_resize([]::VARCHAR[], redactions.phone, 'phone')) END AS redaction_rules
    FROM counted
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
       CASE WHEN role = 'assistant' THEN regexp_matches(clean, re_refusal()) ELSE false END AS is_refusal,
       CASE WHEN role = 'assistant' THEN regexp_matches(clean, re_error_reply()) ELSE false END AS is_error
FROM estimated;
