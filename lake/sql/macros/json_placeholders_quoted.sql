-- json_placeholders_quoted(t): in a JSON text whose escapes are hidden (json_escapes_hidden(), so every `"`
-- opens or closes a string), each placeholder outside a string made a string: a card number or a phone
-- number written as a JSON number becomes "<CREDIT_CARD>" or "<PHONE>", and the text stays JSON.
CREATE OR REPLACE MACRO json_placeholders_quoted(t) AS
    array_to_string(list_transform(string_split(t, '"'),
                                   lambda piece, i: CASE WHEN i % 2 = 1 THEN regexp_replace(piece, '<[A-Z_]+>', '"\0"', 'g')
                                                         ELSE piece END), '"');
