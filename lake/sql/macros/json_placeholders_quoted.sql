-- json_placeholders_quoted(t): in a JSON text whose escapes are hidden (json_escapes_hidden(), so every `"`
-- opens or closes a string), each placeholder outside a string made a string, with what is left of the number
-- it was taken from (a sign, a fraction): a card or phone number written as a JSON number becomes
-- "<CREDIT_CARD>" or "-<PHONE>.5", and the text stays JSON.
CREATE OR REPLACE MACRO json_placeholders_quoted(t) AS
    array_to_string(list_transform(string_split(t, '"'),
                                   lambda piece, i: CASE WHEN i % 2 = 1
                                                         THEN regexp_replace(piece, '[-+.0-9eE]*(?:<[A-Z_]+>[-+.0-9eE]*)+', '"\0"', 'g')
                                                         ELSE piece END), '"');
