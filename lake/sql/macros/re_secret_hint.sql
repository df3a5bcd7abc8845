CREATE OR REPLACE MACRO re_secret_hint() AS
    '-----BEGIN|eyJ|\b(?:sk|rk)_|\bsk-|\bgh[pousr]_|\bgithub_pat_|\bAKIA|\bASIA|\bxox|\bAIza|\bhf_|(?i:bearer)|://'
    || '|(?i:api[_-]?key|secret[_-]?key|client[_-]?secret|access[_-]?token|auth[_-]?token|password|passwd)["'']?\s*[:=]';
