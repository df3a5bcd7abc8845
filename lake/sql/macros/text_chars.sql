CREATE OR REPLACE MACRO text_chars(t) AS length(regexp_replace(t, '[^\p{L}\p{M}\s]+', '', 'g'));
