CREATE OR REPLACE MACRO count_of(t, needle) AS (length(t) - length(replace(t, needle, ''))) // length(needle);
