-- Characters: control characters (C0 but tab and newline, DEL, C1, zero-width, BOM) are removed; exotic
-- spaces (no-break, em/en, ideographic, vertical tab, form feed) become a plain space.
CREATE OR REPLACE MACRO re_control() AS '[\x00-\x08\x0e-\x1f\x7f-\x{9f}\x{200b}-\x{200d}\x{2060}\x{feff}]';
