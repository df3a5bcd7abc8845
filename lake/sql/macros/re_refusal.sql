-- Replies that open with a refusal or that are an error message rather than an answer (quality flags).
CREATE OR REPLACE MACRO re_refusal() AS
    '^\s*(?i:(?:i[\x{2019}'']m|i am) sorry,? but i |i apologi[sz]e,? but i |as an ai\b'
    || '|(?:unfortunately,? )?i (?:can[\x{2019}'']?t|cannot|am (?:not able|unable) to|won[\x{2019}'']t) '
    ||   '(?:help|assist|provide|comply|fulfil|do that|create|generate|answer|share|write))';
