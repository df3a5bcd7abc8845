-- json_escapes_shown(t): the escapes json_escapes_hidden() hid, written back (\uXXXX in lower-case hex).
CREATE OR REPLACE MACRO json_escapes_shown(t) AS
    CASE WHEN regexp_matches(t, '[\x{E022}\x{E02F}\x{E05C}\x{E062}\x{E066}\x{E06E}\x{E072}\x{E074}\x{F0000}-\x{FFFFF}]')
         THEN array_to_string(list_transform(
             list_zip(regexp_split_to_array(t, '[\x{E022}\x{E02F}\x{E05C}\x{E062}\x{E066}\x{E06E}\x{E072}\x{E074}\x{F0000}-\x{FFFFF}]'),
                      regexp_extract_all(t, '[\x{E022}\x{E02F}\x{E05C}\x{E062}\x{E066}\x{E06E}\x{E072}\x{E074}\x{F0000}-\x{FFFFF}]')),
             lambda z: z[1] || CASE WHEN z[2] IS NULL THEN ''
                                    WHEN unicode(z[2]) >= 983040 THEN '\u' || printf('%04x', unicode(z[2]) - 983040)
                                    ELSE '\' || chr(unicode(z[2]) - 57344) END), '')
         ELSE t END;
