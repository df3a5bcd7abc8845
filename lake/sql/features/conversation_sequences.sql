CREATE OR REPLACE VIEW conversation_sequences AS SELECT * FROM conversation_sequences_in('conversation_partials_cached');
