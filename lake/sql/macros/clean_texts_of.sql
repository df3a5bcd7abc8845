-- clean_texts_of(texts, carry): the cleaning every text of the lake gets, one row per row of the relation `texts`
-- (a name; its column `content` is the text, NULL allowed): PII and secrets replaced by typed placeholders,
-- control characters out, whitespace normalised. A message's text (text_features_of) and its other parts
-- (its reasoning, the arguments of its tool calls, its attachments' names: message_parts_of) go through this
-- one chain, so a rule applies alike wherever a value was written.
--
-- Redaction: the rules are macros, one file each in this folder (re_url, re_email, re_ip, re_iban, re_ssn,
-- re_card, re_phone and their hints), and the secret rules a table (lake/redaction/secrets.yml) that
-- lake.redaction turns into the macros re_secret_hint() and redact_secrets(); the cleaning SQL, the tests and the
-- benchmark's plain-Python reference all read the same text (RE2 syntax that Python's `re` also accepts once
-- `\x{...}` is spelled `\U...`).
-- Cheap hints come with the patterns: a regex scan that only answers "is there anything?" runs as a DFA at
-- memory speed, while a replacement that extracts matches is ~10x slower per byte; so every text is
-- scanned once with re_work() (and re_noise_hint(), in one pattern) and only the few that match go through
-- the replacements, each step behind its own hint. A hint is a regex scan too (~3 ns a byte, whatever the
-- pattern), so none is run where its answer is already known: the digits hint serves both the card and the
-- phone step (a text no card was taken from still matches it), and a step that left its text unchanged
-- inserted no placeholder (counting them replaces and measures whole texts, 3 passes each).
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
-- `carry` names the input columns passed through, first. Columns after them:
--   noisy           the text has a run of symbols or digits (re_noise_hint(): text_features_of counts its letters)
--   redactions      STRUCT(secret, url, email, ip, iban, ssn, credit_card, phone): placeholders inserted, by type
--   clean           the text with placeholders, control characters out, whitespace normalised (NULL: none)
--   redaction_rules the rule behind each placeholder: the secrets' rule names in the order of the text, then the
--                   other types' names (which rule fired on a text, without showing what it replaced)
CREATE OR REPLACE MACRO clean_texts_of(texts, carry := ['event_id']) AS TABLE
WITH scanned AS (
    SELECT COLUMNS(lambda c: c = 'content' OR list_contains(carry, c)),
           regexp_matches(content, re_work() || '|' || re_noise_hint()) AS suspect
    FROM query_table(texts)
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
    SELECT COLUMNS(lambda c: list_contains(carry, c)), noisy, redactions,
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
)
SELECT * FROM cleaned;
