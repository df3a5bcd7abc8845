CREATE OR REPLACE MACRO re_iban_hint() AS '\b[A-Z]{2}\d{2} ?[A-Z0-9]{4}';
