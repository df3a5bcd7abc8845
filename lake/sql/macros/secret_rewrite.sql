-- Keeps what the groups of re_secret() hold: "Bearer ", "scheme://user:" and "@", "password = ".
CREATE OR REPLACE MACRO secret_rewrite() AS '\1\2\4<SECRET>\3';
