-- model_lineage: each successful Ollama tag back to the version, training run and snapshot behind it.
CREATE OR REPLACE VIEW model_lineage AS
SELECT d.tag, d.moving_tag, d.host, d.deployment_id, d.finished_at AS deployed_at, v.name, v.version, v.status,
       v.base_model, v.run_id, r.status AS run_status, v.snapshot_id, v.config_hash, v.code_version
FROM model_deployments d
JOIN model_versions v USING (name, version)
LEFT JOIN training_runs r ON r.run_id = v.run_id
WHERE d.status = 'succeeded';
