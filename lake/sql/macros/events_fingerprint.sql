-- events_fingerprint(high, low): the events hash as 32 hex digits, as the snapshot records it
CREATE OR REPLACE MACRO events_fingerprint(high, low) AS lpad(lower(hex(high)), 16, '0') || lpad(lower(hex(low)), 16, '0');
