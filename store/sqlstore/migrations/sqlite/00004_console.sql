-- Web console users and their sessions (issue 5). Only a bcrypt hash of a
-- password and the SHA-256 of a session id are kept. Devices get an index
-- on last_seen for "seen in the last hour" (and the device list's order).

-- +goose Up
CREATE TABLE users (
    id                   INTEGER PRIMARY KEY,
    name                 TEXT NOT NULL UNIQUE,
    password_hash        TEXT NOT NULL,
    created_at           INTEGER NOT NULL,
    password_changed_at  INTEGER NOT NULL,
    last_login           INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE sessions (
    id          INTEGER PRIMARY KEY,
    hash        TEXT NOT NULL UNIQUE,
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    csrf        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE INDEX sessions_expires ON sessions (expires_at);

CREATE INDEX devices_last_seen ON devices (last_seen);

-- +goose Down
DROP INDEX devices_last_seen;
DROP TABLE sessions;
DROP TABLE users;
