-- Replace every occurrence of each needle (validated candidates) with the placeholder.
CREATE OR REPLACE MACRO replace_each(t, needles, placeholder) AS
    list_reduce(needles, lambda acc, x: replace(acc, x, placeholder), t);
