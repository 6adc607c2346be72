-- Job tokens bound to the client address that received them, handed
-- out once per boot of the job (a repeated boot of a pending job from the
-- same address rotates the token), expiring with the job.

-- +goose Up
ALTER TABLE jobs ADD COLUMN client_ip TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN boots BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN token_issued_at BIGINT NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE jobs DROP COLUMN token_issued_at;
ALTER TABLE jobs DROP COLUMN boots;
ALTER TABLE jobs DROP COLUMN client_ip;
