-- Every hint in one scan: a message that matches none of it needs no cleaning at all.
CREATE OR REPLACE MACRO re_work() AS
    re_characters_hint() || '|' || re_layout_hint() || '|' || re_secret_hint() || '|' || re_url_hint()
    || '|' || re_email_hint() || '|' || re_ip_hint() || '|' || re_iban_hint() || '|' || re_ssn_hint()
    || '|' || re_digits_hint();
