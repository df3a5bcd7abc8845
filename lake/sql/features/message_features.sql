-- message_features: message_features_of() for every message event this connection sees, one row per event.
--
-- Delta data files are immutable, so lake/views.py keeps each file's features in a Parquet file under
-- <home>/cache/message_features/ (keyed by the data file's name and a fingerprint of the cleaning SQL) and
-- binds them as message_features_cached; the features of the rest (the spool, files without a cache entry)
-- are computed when the connection is bound, into message_features_uncached. An event bound twice (in the
-- spool and in a file, or in two files) is kept once there, so the union needs no deduplication here.
CREATE OR REPLACE VIEW message_features AS
SELECT * FROM message_features_cached
UNION ALL BY NAME
SELECT * FROM message_features_uncached;
