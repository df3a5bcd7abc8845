-- json_escapes_shown(t): the escapes json_escapes_hidden() hid, written back (\uXXXX in lower-case hex).
CREATE OR REPLACE MACRO json_escapes_shown(t) AS
    CASE WHEN regexp_matches(t, re_json_hidden())
         THEN array_to_string(list_transform(
             list_zip(regexp_split_to_array(t, re_json_hidden()), regexp_extract_all(t, re_json_hidden())),
             lambda z: z[1] || CASE WHEN z[2] IS NULL THEN ''
                                    WHEN unicode(z[2]) >= 983040 THEN '\u' || printf('%04x', unicode(z[2]) - 983040)
                                    ELSE '\' || chr(unicode(z[2]) - 57344) END), '')
         ELSE t END;
