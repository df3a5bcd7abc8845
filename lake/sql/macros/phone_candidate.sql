-- Worth asking the library about: 7 digits or more.
CREATE OR REPLACE MACRO phone_candidate(candidate) AS length(regexp_replace(candidate, '[^0-9]', '', 'g')) >= 7;
