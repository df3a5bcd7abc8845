-- registry_events: every change to the model registry (versions, statuses, aliases, evaluations, runs,
-- deployments, promotions), one row per event with who/when/why, `seq` giving the commit order.
-- The registry's current state is the views below, each a fold of these events.
CREATE OR REPLACE VIEW registry_events AS
SELECT * REPLACE (metrics::JSON AS metrics, settings::JSON AS settings, details::JSON AS details,
                  digests::JSON AS digests, comparison::JSON AS comparison)
FROM registry_table;
