-- model_promotions: the history of production: every promotion and rollback, forced or gated, with the
-- comparison the gate showed.
CREATE OR REPLACE VIEW model_promotions AS
SELECT name, version, previous_version, action, forced, comparison, deployment_id, occurred_at, who, why
FROM registry_events
WHERE event_type = 'promotion_recorded';
