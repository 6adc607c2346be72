-- +goose Up
ALTER TABLE devices ADD COLUMN info TEXT NOT NULL DEFAULT '';
ALTER TABLE work ADD COLUMN kind TEXT NOT NULL DEFAULT 'boot';
ALTER TABLE work ADD COLUMN image TEXT NOT NULL DEFAULT '';
ALTER TABLE work ADD COLUMN after TEXT NOT NULL DEFAULT 'reboot';
ALTER TABLE work ADD COLUMN compression INTEGER NOT NULL DEFAULT 0;
ALTER TABLE work ADD COLUMN device TEXT NOT NULL DEFAULT '';

CREATE TABLE jobs (
    id           INTEGER PRIMARY KEY,
    mac          TEXT NOT NULL,
    kind         TEXT NOT NULL,
    image        TEXT NOT NULL DEFAULT '',
    device       TEXT NOT NULL DEFAULT '',
    after        TEXT NOT NULL DEFAULT 'reboot',
    compression  INTEGER NOT NULL DEFAULT 0,
    state        TEXT NOT NULL,
    phase        TEXT NOT NULL DEFAULT '',
    bytes_done   INTEGER NOT NULL DEFAULT 0,
    bytes_total  INTEGER NOT NULL DEFAULT 0,
    rate         INTEGER NOT NULL DEFAULT 0,
    message      TEXT NOT NULL DEFAULT '',
    error        TEXT NOT NULL DEFAULT '',
    token_hash   TEXT NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    started_at   INTEGER NOT NULL DEFAULT 0,
    updated_at   INTEGER NOT NULL,
    finished_at  INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_mac ON jobs (mac, id);
CREATE INDEX jobs_state ON jobs (state);

CREATE TABLE job_log (
    id      INTEGER PRIMARY KEY,
    job_id  INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    time    INTEGER NOT NULL,
    line    TEXT NOT NULL
);
CREATE INDEX job_log_job ON job_log (job_id, id);

-- +goose Down
DROP TABLE job_log;
DROP TABLE jobs;
ALTER TABLE work DROP COLUMN device;
ALTER TABLE work DROP COLUMN compression;
ALTER TABLE work DROP COLUMN after;
ALTER TABLE work DROP COLUMN image;
ALTER TABLE work DROP COLUMN kind;
ALTER TABLE devices DROP COLUMN info;
