-- Card and phone numbers are found as candidates, then validated (Luhn; phone shape and digit count).
CREATE OR REPLACE MACRO re_digits_hint() AS '\d[\d .()-]{5,}\d';
