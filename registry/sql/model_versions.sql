-- model_versions: one row per registered version with its current status and the aliases pointing at it,
-- and the latest erasure that removed conversations its snapshot held (erased_by, erased_at).
CREATE OR REPLACE VIEW model_versions AS
WITH latest_status AS (
    SELECT name, version, status, occurred_at AS status_at
    FROM registry_events
    WHERE event_type IN ('version_registered', 'status_changed')
    QUALIFY row_number() OVER (PARTITION BY name, version ORDER BY seq DESC) = 1
),
version_aliases AS (
    SELECT name, version, list(alias ORDER BY alias) AS aliases FROM model_aliases GROUP BY ALL
),
erasures AS (
    SELECT name, version, arg_max(erasure_id, seq) AS erased_by, max(occurred_at) AS erased_at
    FROM registry_events WHERE event_type = 'erasure_affected' GROUP BY ALL
)
SELECT r.name, r.version, s.status, coalesce(a.aliases, []::VARCHAR[]) AS aliases, r.base_model, r.adapter_path,
       r.snapshot_id, r.config_hash, r.code_version, r.run_id, r.metrics, r.chat_template,
       r.occurred_at AS created_at, r.who AS created_by, s.status_at, e.erased_by, e.erased_at
FROM registry_events r
JOIN latest_status s USING (name, version)
LEFT JOIN version_aliases a USING (name, version)
LEFT JOIN erasures e USING (name, version)
WHERE r.event_type = 'version_registered';
