-- The assignment a device's last applied bundle came from (so that a
-- group's apply-once assignment is not run again on that device), and no
-- separate index on events.time: lists go newest-first by id, and the
-- index cost a B-tree update on every boot.

-- +goose Up
ALTER TABLE devices ADD COLUMN applied_assignment_id BIGINT NOT NULL DEFAULT 0;
DROP INDEX events_time;

-- +goose Down
CREATE INDEX events_time ON events (time);
ALTER TABLE devices DROP COLUMN applied_assignment_id;
