-- training_runs: the latest state of each training run (running, succeeded, failed with its error).
CREATE OR REPLACE VIEW training_runs AS
SELECT run_id, name, snapshot_id, status, error, details,
       min(occurred_at) OVER (PARTITION BY run_id) AS started_at, occurred_at AS updated_at
FROM registry_events
WHERE event_type = 'run_recorded'
QUALIFY row_number() OVER (PARTITION BY run_id ORDER BY seq DESC) = 1;
