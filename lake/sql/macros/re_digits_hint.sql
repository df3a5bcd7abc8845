-- Card and phone numbers are found as candidates, then validated (Luhn; libphonenumber).
CREATE OR REPLACE MACRO re_digits_hint() AS '\d[\d ./()-]{5,}\d';
