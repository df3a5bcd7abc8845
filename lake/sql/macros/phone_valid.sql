CREATE OR REPLACE MACRO phone_valid(candidate) AS
    regexp_full_match(candidate, re_phone_shape())
    AND length(regexp_replace(candidate, '[^0-9]', '', 'g')) BETWEEN 7 AND 15;
