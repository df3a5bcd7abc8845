CREATE OR REPLACE MACRO re_email_hint() AS '@';
