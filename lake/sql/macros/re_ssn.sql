-- A US social security number right after its words (SSN, social security, SS#; up to 24 other characters
-- between, no digits): 3-2-4 digits with dashes or spaces, the number in group 1 (ssn_valid() checks it).
CREATE OR REPLACE MACRO re_ssn() AS
    '(?i:\bssns?\b|social security|\bss#)[^0-9\n]{0,24}(\d{3}[- ]\d{2}[- ]\d{4})\b';
