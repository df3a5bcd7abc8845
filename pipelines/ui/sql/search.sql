-- search: the Conversations page's list: the conversations whose text contains $text (any case; '' matches
-- all) and that pass every filter given (NULL: no filter): a model that replied, a source, a tag, the
-- feedback verdict, a quality flag ('passed', or a reason of the quality view), a split of the snapshot
-- bound as split_index. Newest first, at most $limit. {texts} is clean_messages (redacted) or messages (raw).
WITH matched AS (
    SELECT conversation_id, count(*) AS matches
    FROM {texts}
    WHERE $text <> '' AND contains(lower(content), lower($text))
    GROUP BY conversation_id
)
SELECT c.conversation_id, c.last_at, c.messages, c.models, c.sources, c.tags, c.feedback,
       q.passed, q.reasons, s.split, m.matches
FROM conversations c
LEFT JOIN matched m USING (conversation_id)
LEFT JOIN quality q USING (conversation_id)
LEFT JOIN split_index s USING (conversation_id)
WHERE ($text = '' OR m.matches IS NOT NULL)
  AND ($model IS NULL OR list_contains(c.models, $model))
  AND ($source IS NULL OR list_contains(c.sources, $source))
  AND ($tag IS NULL OR list_contains(c.tags, $tag))
  AND ($feedback IS NULL OR c.feedback = $feedback)
  AND ($flag IS NULL OR ($flag = 'passed' AND q.passed) OR list_contains(q.reasons, $flag))
  AND ($split IS NULL OR s.split = $split)
ORDER BY c.last_at DESC, c.conversation_id
LIMIT $limit;
