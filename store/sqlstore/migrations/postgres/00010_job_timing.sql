-- Where a capture's or restore's time went (package timing: busy time per
-- stage, shares, bottleneck), as the agent last reported it: JSON, '' when
-- the job reported none (other kinds, older agents).

-- +goose Up
ALTER TABLE jobs ADD COLUMN timing TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE jobs DROP COLUMN timing;
