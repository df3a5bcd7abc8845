-- A US social security number: 3-2-4 digits with dashes or spaces (replaced only near a context word,
-- re_ssn_hint(), and when ssn_valid()).
CREATE OR REPLACE MACRO re_ssn() AS '\b\d{3}[- ]\d{2}[- ]\d{4}\b';
