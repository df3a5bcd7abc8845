-- The private-use characters json_escapes_hidden() writes for JSON escapes: U+E000 + the code of X for \X
-- (", /, \, b, f, n, r, t) and U+F0000 + XXXX for \uXXXX.
CREATE OR REPLACE MACRO re_json_hidden() AS '[\x{E022}\x{E02F}\x{E05C}\x{E062}\x{E066}\x{E06E}\x{E072}\x{E074}\x{F0000}-\x{FFFFF}]';
