-- feedback: conversations by their feedback verdict (none, positive, negative, mixed), with the share of all
-- conversations (stats.feedback_rate is the share of those rated).
SELECT feedback, 'conversations' AS series, count(*) AS value,
       count(*) / sum(count(*)) OVER () AS share
FROM quality
GROUP BY feedback
ORDER BY value DESC, feedback;
