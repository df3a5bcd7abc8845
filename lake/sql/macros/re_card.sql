CREATE OR REPLACE MACRO re_card() AS '\b(?:\d[ -]?){12,18}\d\b';
