-- snapshots: one row per dataset snapshot of the home, read from each snapshot's manifest.json: its
-- number and name, the lake version and config it was cut from, the hashes that pin it, its counts per split
-- and its tokenizer. Files, drop reasons, token statistics and the full config stay JSON (`files`,
-- `drop_reasons`, `splits`, `config`). The folder is the variable `snapshots_folder`, which the snapshots'
-- view layer (pipelines/snapshot/catalog.py) sets on every bind.
-- Registry records name a snapshot by its id as text: join model_versions ON snapshot_id = id::VARCHAR.
-- read_text, unlike read_json, still gives typed columns when there is no snapshot yet.
CREATE OR REPLACE VIEW snapshots AS
WITH manifests AS (
    SELECT unnest(from_json(content, '{"id": "INTEGER", "name": "VARCHAR", "path": "VARCHAR",
        "created_at": "TIMESTAMPTZ", "lake_version": "BIGINT", "config_hash": "VARCHAR", "code_hash": "VARCHAR",
        "content_hash": "VARCHAR", "formats": "VARCHAR[]", "tokenizer": "JSON", "conversations_in_lake": "BIGINT",
        "conversations_selected": "BIGINT", "splits": "JSON", "reused_files": "INTEGER",
        "erased_conversations": "BIGINT", "drop_reasons": "JSON", "files": "JSON", "config": "JSON"}'))
    FROM read_text(getvariable('snapshots_folder') || '/*/manifest.json')
    WHERE NOT contains(filename, '/.')  -- a snapshot being written
)
SELECT id, name, path, created_at, lake_version, config_hash, code_hash, content_hash, formats,
       tokenizer->>'name_or_path' AS tokenizer, (tokenizer->>'max_tokens')::INTEGER AS max_tokens,
       conversations_in_lake, conversations_selected,
       (splits->'train'->>'conversations')::BIGINT AS train_conversations,
       (splits->'validation'->>'conversations')::BIGINT AS validation_conversations,
       (splits->'test'->>'conversations')::BIGINT AS test_conversations,
       reused_files, erased_conversations, drop_reasons, splits, files, config
FROM manifests;
