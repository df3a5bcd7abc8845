-- A phone number candidate: digits with the separators numbers are written with (spaces, dots, dashes,
-- slashes, parentheses), optionally after + or (, from a word boundary to one; phone_numbers() (lake.redaction,
-- libphonenumber) says which are numbers.
CREATE OR REPLACE MACRO re_phone() AS '(?:\+|\(\+?|\b)\d(?:[ ./()-]{0,3}\d){5,}\b';
