-- json_private_use_escaped(t): a JSON text with the private-use characters json_escapes_hidden() writes for
-- escapes (re_json_hidden()), should it hold any, written as the JSON escapes they are (\uXXXX, a surrogate
-- pair past U+FFFF): the same JSON, and what json_escapes_shown() writes back is what went in.
CREATE OR REPLACE MACRO json_private_use_escaped(t) AS
    CASE WHEN regexp_matches(t, re_json_hidden())
         THEN list_reduce(list_distinct(regexp_extract_all(t, re_json_hidden())),
                          lambda acc, c: replace(acc, c, CASE WHEN unicode(c) < 65536 THEN printf('\u%04x', unicode(c))
                                                              ELSE printf('\u%04x\u%04x', 55296 + ((unicode(c) - 65536) >> 10),
                                                                          56320 + ((unicode(c) - 65536) & 1023)) END), t)
         ELSE t END;
