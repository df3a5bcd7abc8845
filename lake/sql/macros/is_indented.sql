-- Indented (a line break then a space) or tabbed: two substring searches, far cheaper than a regex scan.
CREATE OR REPLACE MACRO is_indented(t) AS contains(t, e'\n ') OR contains(t, e'\t');
