-- Non-text noise: only a message with a run of 8 digits/ASCII symbols, 3 emoji or arrows, a replacement
-- character or a 60-character unbroken token can be noise; for those the share of letters and spaces is
-- counted (a regex replacement, too slow to run on every message).
CREATE OR REPLACE MACRO re_noise_hint() AS '[!-@\[-`{-~]{8}|[\x{2190}-\x{2bff}\x{1f000}-\x{1faff}]{3}|\x{fffd}|[!-~]{60}';
