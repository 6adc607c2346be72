-- What each policy version changed, so that a server's cached policy can
-- follow a change to one device (a registration: its group membership and
-- assignment; its menu) or one group's menu without reloading everything.
-- kind '' is any other change (reload everything). Old rows are pruned:
-- a cache older than the oldest row reloads everything.

-- +goose Up
CREATE TABLE policy_changes (
	version BIGINT PRIMARY KEY,
	kind TEXT NOT NULL DEFAULT '',
	target TEXT NOT NULL DEFAULT ''
);

-- +goose Down
DROP TABLE policy_changes;
