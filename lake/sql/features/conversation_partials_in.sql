-- conversation_partials: the partial aggregates of every conversation (conversation_partials_of), one row per
-- conversation and Delta data file (cached with each file, see lake/views.py; one per conversation for the
-- spool and files without a cache entry). The conversations of conversation_exceptions (corrections, events
-- stored twice, erasure) are recomputed from clean_messages instead, in one partial each.
-- conversation_features and conversation_sequences merge them.
--
-- conversation_partials_in(cached): the same with the cache entries of the relation `cached` (a name) in place
-- of all of them: features_of_conversations (lake/views.py) passes those of the few data files that hold
-- some conversations.
CREATE OR REPLACE MACRO conversation_partials_in(cached) AS TABLE
SELECT * FROM (SELECT * FROM query_table(cached)
               UNION ALL BY NAME SELECT * FROM conversation_partials_uncached)
ANTI JOIN conversation_exceptions USING (conversation_id)
UNION ALL BY NAME
SELECT * FROM conversation_partials_of('conversation_exception_messages');
