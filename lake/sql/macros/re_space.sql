CREATE OR REPLACE MACRO re_space() AS '[\x0b\x0c\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]';
