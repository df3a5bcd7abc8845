CREATE OR REPLACE MACRO normalise_layout(t) AS
    trim(regexp_replace(regexp_replace(regexp_replace(t, '[ \t]+\n', e'\n', 'g'),
                                       '(\S)(?:[ \t][ \t]+|\t)', '\1 ', 'g'),
                        '\n\n\n+', e'\n\n', 'g'), e' \t\n');
