-- An IBAN candidate: country, check digits, then 11-30 letters and digits, plain or in groups of four.
CREATE OR REPLACE MACRO re_iban() AS '\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b';
