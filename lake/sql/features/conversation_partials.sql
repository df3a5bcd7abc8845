CREATE OR REPLACE VIEW conversation_partials AS SELECT * FROM conversation_partials_in('conversation_partials_cached');
