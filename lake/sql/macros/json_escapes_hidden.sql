-- json_escapes_hidden(t): a JSON text with each escape (\n, \", \\, \/, \u00fc, ...) written as one private-use
-- character (re_json_hidden(): \X as U+E000 + the code of X, \uXXXX as U+F0000 + XXXX), so the cleaning rules
-- see a JSON text as they see prose: a word right after "\n" is a word of its own (not "nann@example.com",
-- whose placeholder would leave a stray backslash), and no rule stops inside an escape or splits one.
-- json_escapes_shown() writes them back (those characters, should the text hold them, are escaped first:
-- json_private_use_escaped()).
CREATE OR REPLACE MACRO json_escapes_hidden(t) AS
    CASE WHEN contains(t, '\') OR regexp_matches(t, re_json_hidden()) THEN array_to_string(list_transform(
             list_zip(regexp_split_to_array(json_private_use_escaped(t), '\\(?:u[0-9a-fA-F]{4}|["\\/bfnrt])'),
                      regexp_extract_all(json_private_use_escaped(t), '\\(?:u[0-9a-fA-F]{4}|["\\/bfnrt])')),
             lambda z: z[1] || CASE WHEN z[2] IS NULL THEN ''
                                    WHEN z[2][2] = 'u' THEN chr(983040 + ('0x' || z[2][3:])::INTEGER)
                                    ELSE chr(57344 + ascii(z[2][2])) END), '')
         ELSE t END;
