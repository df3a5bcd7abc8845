-- ISO 13616: the first four characters moved to the end, letters as 10-35, the number mod 97 is 1 (computed
-- digit by digit, so it never overflows). 15 to 34 characters.
CREATE OR REPLACE MACRO iban_valid(candidate) AS
    length(replace(candidate, ' ', '')) BETWEEN 15 AND 34
    AND list_reduce(string_split(substr(replace(candidate, ' ', ''), 5) || left(candidate, 4), ''),
                    lambda acc, c: CASE WHEN c BETWEEN '0' AND '9' THEN (acc * 10 + c::INT) % 97
                                        ELSE (acc * 100 + ascii(c) - 55) % 97 END, 0) = 1;
