CREATE OR REPLACE MACRO re_characters_hint() AS re_control() || '|\r|' || re_space();
