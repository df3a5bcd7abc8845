-- model_aliases: where each alias (production, candidate, any user alias) points now; the latest change wins.
CREATE OR REPLACE VIEW model_aliases AS
SELECT name, alias, version, occurred_at AS set_at, who AS set_by, why
FROM (
    SELECT * FROM registry_events WHERE event_type = 'alias_changed'
    QUALIFY row_number() OVER (PARTITION BY name, alias ORDER BY seq DESC) = 1
)
WHERE version IS NOT NULL;
