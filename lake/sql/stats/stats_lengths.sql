-- stats_lengths: the length distribution of cleaned messages by role (and of all messages): quantiles of
-- characters and words, and a histogram of characters in powers-of-4 buckets (key: the bucket's upper
-- bound; 1 048 576 holds everything longer).
CREATE OR REPLACE VIEW stats_lengths AS
SELECT coalesce(role, 'all') AS role,
       count(*) AS messages,
       round(avg(chars), 1) AS mean_chars,
       quantile_disc(chars, 0.1) AS p10_chars,
       quantile_disc(chars, 0.5) AS p50_chars,
       quantile_disc(chars, 0.9) AS p90_chars,
       quantile_disc(chars, 0.99) AS p99_chars,
       max(chars) AS max_chars,
       quantile_disc(words, 0.5) AS p50_words,
       histogram(least(4 ** ceil(log(4, greatest(chars, 1))), 1048576)::BIGINT) AS chars_histogram
FROM clean_messages
GROUP BY GROUPING SETS ((role), ())
ORDER BY role = 'all', role;
