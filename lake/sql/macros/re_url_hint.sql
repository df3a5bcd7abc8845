CREATE OR REPLACE MACRO re_url_hint() AS '://|www\.';
