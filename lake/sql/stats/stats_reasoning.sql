-- stats_reasoning: how much the replies of each model reason (NULL: replies logged without a model): its
-- replies, those with reasoning and their share, and the characters of that reasoning against those of the
-- same replies' text (cleaned): what thinking costs per character of answer.
CREATE OR REPLACE VIEW stats_reasoning AS
SELECT model,
       count(*) AS replies,
       count(*) FILTER (WHERE length(reasoning) > 0) AS reasoning_replies,
       count(*) FILTER (WHERE length(reasoning) > 0) / count(*) AS reasoning_share,
       coalesce(sum(length(reasoning)), 0)::BIGINT AS reasoning_chars,
       coalesce(sum(chars) FILTER (WHERE length(reasoning) > 0), 0)::BIGINT AS reply_chars,
       sum(length(reasoning)) / nullif(sum(chars) FILTER (WHERE length(reasoning) > 0), 0) AS reasoning_ratio
FROM clean_messages
WHERE role = 'assistant'
GROUP BY model
ORDER BY replies DESC, model;
