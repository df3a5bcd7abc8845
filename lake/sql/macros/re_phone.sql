CREATE OR REPLACE MACRO re_phone() AS '(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d(?:[ .-]?\d){5,}';
