-- stats_by_model: the replies of each model (NULL: replies logged without a model): how many, how long,
-- how often they refuse or fail, how they are rated, tokens and latency where known.
CREATE OR REPLACE VIEW stats_by_model AS
SELECT model,
       count(*) AS replies,
       count(DISTINCT conversation_id) AS conversations,
       round(avg(chars), 1) AS mean_chars,
       median(chars)::BIGINT AS median_chars,
       count(*) FILTER (WHERE is_refusal) AS refusals,
       count(*) FILTER (WHERE is_error) AS errors,
       sum(thumbs_up)::BIGINT AS thumbs_up,
       sum(thumbs_down)::BIGINT AS thumbs_down,
       sum(thumbs_down) / nullif(sum(thumbs_up) + sum(thumbs_down), 0) AS thumbs_down_rate,
       sum(completion_tokens)::BIGINT AS completion_tokens,
       round(avg(latency_ms), 1) AS mean_latency_ms
FROM clean_messages
WHERE role = 'assistant'
GROUP BY model
ORDER BY replies DESC, model;
