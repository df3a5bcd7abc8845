-- Counts per split over snapshot_index: conversations, messages, and single-turn examples (replies).
SELECT split, count(*) AS conversations, sum(message_count) AS messages, sum(len(reply_positions)) AS replies
FROM snapshot_index
GROUP BY split
ORDER BY split
