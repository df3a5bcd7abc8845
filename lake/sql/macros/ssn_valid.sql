-- The numbers the SSA never issues: area 000, 666 or 900-999, group 00, serial 0000.
CREATE OR REPLACE MACRO ssn_valid(candidate) AS
    NOT regexp_matches(candidate, '^(?:000|666|9\d\d)|^\d{3}[- ]00|0000$');
