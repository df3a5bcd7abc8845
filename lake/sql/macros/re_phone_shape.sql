CREATE OR REPLACE MACRO re_phone_shape() AS '(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?|\d{2,4}[ .-]?)\d{3,4}[ .-]?\d{4}';
