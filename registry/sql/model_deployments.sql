-- model_deployments: the latest state of each deployment to Ollama (running, succeeded, failed with its error).
CREATE OR REPLACE VIEW model_deployments AS
SELECT deployment_id, name, version, action, host, tag, moving_tag, base, digests, status, error,
       started_at, finished_at, details, who, why
FROM registry_events
WHERE event_type = 'deployment_recorded'
QUALIFY row_number() OVER (PARTITION BY deployment_id ORDER BY seq DESC) = 1;
