-- Scheduled assignments and Wake-on-LAN: an assignment is not handed out
-- before not_before (0 = at once); with wake set, the server wakes its
-- devices at that time, and woken_at records the claim (0 = not yet), so
-- that servers sharing the database wake them once. devices.iface is the
-- server interface on which the device was last seen (proxyDHCP, DHCP),
-- where its magic packet goes.

-- +goose Up
ALTER TABLE assignments ADD COLUMN not_before BIGINT NOT NULL DEFAULT 0;
ALTER TABLE assignments ADD COLUMN wake BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE assignments ADD COLUMN woken_at BIGINT NOT NULL DEFAULT 0;
CREATE INDEX assignments_due_wake ON assignments (not_before) WHERE wake AND woken_at = 0;
ALTER TABLE devices ADD COLUMN iface TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE devices DROP COLUMN iface;
DROP INDEX assignments_due_wake;
ALTER TABLE assignments DROP COLUMN woken_at;
ALTER TABLE assignments DROP COLUMN wake;
ALTER TABLE assignments DROP COLUMN not_before;
