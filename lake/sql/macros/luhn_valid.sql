-- Luhn: from the right, every second digit doubled (its digits summed); valid when the total ends in 0.
CREATE OR REPLACE MACRO luhn_valid(candidate) AS
    list_sum(list_transform(string_split(reverse(regexp_replace(candidate, '[^0-9]', '', 'g')), ''),
                            lambda d, i: CASE WHEN i % 2 = 0 THEN (d::INT * 2) // 10 + (d::INT * 2) % 10
                                              ELSE d::INT END)) % 10 = 0;
