-- model_evaluations: every evaluation of a version (0 is the base model) on a snapshot's split.
CREATE OR REPLACE VIEW model_evaluations AS
SELECT evaluation_id, name, version, snapshot_id, split, metrics, against, settings, samples,
       occurred_at AS evaluated_at, who
FROM registry_events
WHERE event_type = 'evaluation_recorded';
