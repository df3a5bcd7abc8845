-- Shannon entropy of a string in bits a character: how random it looks (a key ~4-6, code and words ~3).
CREATE OR REPLACE MACRO entropy(s) AS
    list_sum(list_transform(list_distinct(string_split(s, '')),
                            lambda c: -((length(s) - length(replace(s, c, ''))) / length(s))
                                      * log2((length(s) - length(replace(s, c, ''))) / length(s))));
