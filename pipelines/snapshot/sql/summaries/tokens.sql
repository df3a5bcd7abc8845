-- Token statistics per split for the two kinds of examples: whole conversations (multi-turn formats) and
-- single replies with their context (single-turn formats), over snapshot_index. Histogram bins are powers
-- of two: [2^k, 2^(k+1)), and [0, 1) for empty examples.
WITH example_tokens AS (
    SELECT split, 'conversation' AS kind, prefix_tokens[message_count] AS tokens FROM snapshot_index
    UNION ALL
    SELECT split, 'reply' AS kind, unnest(list_transform(reply_positions, lambda i: prefix_tokens[i])) AS tokens
    FROM snapshot_index
),
binned AS (
    SELECT *, CASE WHEN tokens < 1 THEN 0 ELSE (2 ** floor(log2(tokens)))::BIGINT END AS lo
    FROM example_tokens
    WHERE tokens IS NOT NULL
),
histogram AS (
    SELECT split, kind, list({'lo': lo, 'hi': greatest(1, 2 * lo), 'count': n} ORDER BY lo) AS bins
    FROM (SELECT split, kind, lo, count(*) AS n FROM binned GROUP BY ALL)
    GROUP BY ALL
)
SELECT split, kind, count(*) AS examples, sum(tokens) AS total, avg(tokens) AS mean, min(tokens) AS min,
       quantile_disc(tokens, 0.5) AS p50, quantile_disc(tokens, 0.95) AS p95, max(tokens) AS max,
       any_value(h.bins) AS histogram
FROM binned b JOIN histogram h USING (split, kind)
GROUP BY split, kind
ORDER BY split, kind
