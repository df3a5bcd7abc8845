-- The words a social security number is written with.
CREATE OR REPLACE MACRO re_ssn_hint() AS '(?i:\bssns?\b|social security|\bss#)';
