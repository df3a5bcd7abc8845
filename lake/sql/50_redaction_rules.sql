-- redaction rules: the patterns and helpers behind clean_messages, kept in one place.
--
-- Each pattern is a macro so the cleaning SQL, the tests and the benchmark's plain-Python reference all read
-- the same text (RE2 syntax that Python's `re` also accepts once `\x{...}` is spelled `\u...`).
-- Cheap hints come with the patterns: a regex scan that only answers "is there anything?" runs as a DFA at
-- memory speed, while a replacement that extracts matches is ~10x slower per byte; so every message is
-- scanned once with re_work() and only the few that match go through the replacements.
--
-- Placeholders, applied in this order (earlier ones protect their text from later ones):
--   <SECRET>  private key blocks, JWTs, provider keys (OpenAI/Anthropic sk-, Stripe sk_live_, GitHub ghp_/
--             gho_/ghu_/ghs_/ghr_/github_pat_, AWS AKIA/ASIA, Slack xox?-, Google AIza, Hugging Face hf_),
--             bearer tokens, passwords in URLs (user:<SECRET>@host), `api_key = ...`-style assignments
--   <URL>     scheme://... and www.... (a URL whose password was redacted stays one <URL>)
--   <EMAIL>   name@domain.tld
--   <IP>      IPv4, IPv6 (full, or compressed with a digit in its first group: C++ `std::` stays)
--   <CREDIT_CARD> 13-19 digits (single spaces or dashes between) that pass the Luhn check; others stay
--   <PHONE>   runs of 7-15 digits shaped like a phone number: optional +country, optional (area),
--             then groups ending in 3-4 and 4 digits (dates, versions, sums and card-like runs stay)

-- Characters: control characters (C0 but tab and newline, DEL, C1, zero-width, BOM) are removed; exotic
-- spaces (no-break, em/en, ideographic, vertical tab, form feed) become a plain space.
CREATE OR REPLACE MACRO re_control() AS '[\x00-\x08\x0e-\x1f\x7f-\x{9f}\x{200b}-\x{200d}\x{2060}\x{feff}]';
CREATE OR REPLACE MACRO re_space() AS '[\x0b\x0c\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]';
CREATE OR REPLACE MACRO re_characters_hint() AS re_control() || '|\r|' || re_space();

-- Layout: trailing blanks at line ends go, a run of blanks after a word becomes one space (indentation at
-- the start of a line stays: code keeps its shape), at most one empty line in a row, no blanks at the ends.
CREATE OR REPLACE MACRO re_layout_hint() AS '[ \t]\n|\S(?:[ \t][ \t]|\t)|\n\n\n|^\s|\s$';
-- Indented (a line break then a space) or tabbed: two substring searches, far cheaper than a regex scan.
CREATE OR REPLACE MACRO is_indented(t) AS contains(t, e'\n ') OR contains(t, e'\t');
CREATE OR REPLACE MACRO normalise_layout(t) AS
    trim(regexp_replace(regexp_replace(regexp_replace(t, '[ \t]+\n', e'\n', 'g'),
                                       '(\S)(?:[ \t][ \t]+|\t)', '\1 ', 'g'),
                        '\n\n\n+', e'\n\n', 'g'), e' \t\n');

CREATE OR REPLACE MACRO re_secret() AS
    '-----BEGIN[A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END[A-Z ]*PRIVATE KEY-----|$)'
    || '|\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]*'
    || '|\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}'
    || '|\bsk-[A-Za-z0-9_-]{20,}'
    || '|\bgh[pousr]_[A-Za-z0-9]{30,}'
    || '|\bgithub_pat_[A-Za-z0-9_]{30,}'
    || '|\b(?:AKIA|ASIA)[A-Z0-9]{16}\b'
    || '|\bxox[abposr]-[A-Za-z0-9-]{10,}'
    || '|\bAIza[A-Za-z0-9_-]{35}'
    || '|\bhf_[A-Za-z0-9]{30,}'
    || '|(\b(?i:bearer)\s+)[A-Za-z0-9._~+/-]{16,}=*'
    || '|(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@<>]+:)[^\s/@<>]+(@)'
    || '|(\b(?i:api[_-]?key|secret[_-]?key|client[_-]?secret|access[_-]?token|auth[_-]?token|password|passwd)'
    ||   '["'']?\s*[:=]\s*["'']?)[^\s"'']{8,}';
-- Keeps what the groups of re_secret() hold: "Bearer ", "scheme://user:" and "@", "password = ".
CREATE OR REPLACE MACRO secret_rewrite() AS '\1\2\4<SECRET>\3';
CREATE OR REPLACE MACRO re_secret_hint() AS
    '-----BEGIN|eyJ|\b(?:sk|rk)_|\bsk-|\bgh[pousr]_|\bgithub_pat_|\bAKIA|\bASIA|\bxox|\bAIza|\bhf_|(?i:bearer)|://'
    || '|(?i:api[_-]?key|secret[_-]?key|client[_-]?secret|access[_-]?token|auth[_-]?token|password|passwd)["'']?\s*[:=]';

CREATE OR REPLACE MACRO re_url() AS
    '\b[a-zA-Z][a-zA-Z0-9+.-]{1,15}://(?:[^\s<>"''`]|<SECRET>)*(?:[^\s<>"''`.,;:!?)\]}]|<SECRET>)'
    || '|\bwww\.[a-zA-Z0-9-]+\.(?:[^\s<>"''`]|<SECRET>)*(?:[^\s<>"''`.,;:!?)\]}]|<SECRET>)';
CREATE OR REPLACE MACRO re_url_hint() AS '://|www\.';

CREATE OR REPLACE MACRO re_email_hint() AS '@';
CREATE OR REPLACE MACRO re_email() AS '\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b';

CREATE OR REPLACE MACRO re_ip() AS
    '\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b'
    || '|\b(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}\b'
    || '|\b[0-9a-fA-F]{0,3}\d[0-9a-fA-F]{0,3}(?::[0-9a-fA-F]{1,4}){0,6}::(?:[0-9a-fA-F]{1,4}(?::[0-9a-fA-F]{1,4}){0,6})?';
CREATE OR REPLACE MACRO re_ip_hint() AS '\d\.\d|[0-9a-fA-F]:[0-9a-fA-F]*:';

-- Card and phone numbers are found as candidates, then validated (Luhn; phone shape and digit count).
CREATE OR REPLACE MACRO re_digits_hint() AS '\d[\d .()-]{5,}\d';
CREATE OR REPLACE MACRO re_card() AS '\b(?:\d[ -]?){12,18}\d\b';
CREATE OR REPLACE MACRO re_phone() AS '(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d(?:[ .-]?\d){5,}';
CREATE OR REPLACE MACRO re_phone_shape() AS '(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?|\d{2,4}[ .-]?)\d{3,4}[ .-]?\d{4}';

-- Luhn: from the right, every second digit doubled (its digits summed); valid when the total ends in 0.
CREATE OR REPLACE MACRO luhn_valid(candidate) AS
    list_sum(list_transform(string_split(reverse(regexp_replace(candidate, '[^0-9]', '', 'g')), ''),
                            lambda d, i: CASE WHEN i % 2 = 0 THEN (d::INT * 2) // 10 + (d::INT * 2) % 10
                                              ELSE d::INT END)) % 10 = 0;
CREATE OR REPLACE MACRO phone_valid(candidate) AS
    regexp_full_match(candidate, re_phone_shape())
    AND length(regexp_replace(candidate, '[^0-9]', '', 'g')) BETWEEN 7 AND 15;

-- Every hint in one scan: a message that matches none of it needs no cleaning at all.
CREATE OR REPLACE MACRO re_work() AS
    re_characters_hint() || '|' || re_layout_hint() || '|' || re_secret_hint() || '|' || re_url_hint()
    || '|' || re_email_hint() || '|' || re_ip_hint() || '|' || re_digits_hint();

-- Replace every occurrence of each needle (validated candidates) with the placeholder.
CREATE OR REPLACE MACRO replace_each(t, needles, placeholder) AS
    list_reduce(needles, lambda acc, x: replace(acc, x, placeholder), t);
CREATE OR REPLACE MACRO count_of(t, needle) AS (length(t) - length(replace(t, needle, ''))) // length(needle);

-- Replies that open with a refusal or that are an error message rather than an answer (quality flags).
CREATE OR REPLACE MACRO re_refusal() AS
    '^\s*(?i:(?:i[\x{2019}'']m|i am) sorry,? but i |i apologi[sz]e,? but i |as an ai\b'
    || '|(?:unfortunately,? )?i (?:can[\x{2019}'']?t|cannot|am (?:not able|unable) to|won[\x{2019}'']t) '
    ||   '(?:help|assist|provide|comply|fulfil|do that|create|generate|answer|share|write))';
CREATE OR REPLACE MACRO re_error_reply() AS
    '^\s*(?i:(?:error|exception)\b|traceback \(most recent call last\)|an? (?:unexpected |internal )?error (?:has )?occurred'
    || '|internal server error|(?:rate limit|quota) (?:exceeded|reached)|request (?:failed|timed out)'
    || '|service unavailable|something went wrong)';

-- Non-text noise: only a message with a run of 8 digits/ASCII symbols, 3 emoji or arrows, a replacement
-- character or a 60-character unbroken token can be noise; for those the share of letters and spaces is
-- counted (a regex replacement, too slow to run on every message).
CREATE OR REPLACE MACRO re_noise_hint() AS '[!-@\[-`{-~]{8}|[\x{2190}-\x{2bff}\x{1f000}-\x{1faff}]{3}|\x{fffd}|[!-~]{60}';
CREATE OR REPLACE MACRO text_chars(t) AS length(regexp_replace(t, '[^\p{L}\p{M}\s]+', '', 'g'));
