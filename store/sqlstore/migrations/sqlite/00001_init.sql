-- +goose Up
CREATE TABLE devices (
    id            INTEGER PRIMARY KEY,
    mac           TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL DEFAULT '',
    uuid          TEXT NOT NULL DEFAULT '',
    serial        TEXT NOT NULL DEFAULT '',
    manufacturer  TEXT NOT NULL DEFAULT '',
    product       TEXT NOT NULL DEFAULT '',
    arch          TEXT NOT NULL DEFAULT '',
    platform      TEXT NOT NULL DEFAULT '',
    ip            TEXT NOT NULL DEFAULT '',
    first_seen    INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL
);

CREATE TABLE events (
    id        INTEGER PRIMARY KEY,
    mac       TEXT NOT NULL,
    time      INTEGER NOT NULL,
    kind      TEXT NOT NULL,
    message   TEXT NOT NULL DEFAULT ''
);
CREATE INDEX events_mac_time ON events (mac, time);
CREATE INDEX events_time ON events (time);

CREATE TABLE work (
    mac         TEXT PRIMARY KEY REFERENCES devices (mac) ON DELETE CASCADE,
    kernel      TEXT NOT NULL,
    initrd      TEXT NOT NULL DEFAULT '[]',
    cmdline     TEXT NOT NULL DEFAULT '',
    loader      TEXT NOT NULL DEFAULT 'ipxe',
    once        INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
);

-- +goose Down
DROP TABLE work;
DROP TABLE events;
DROP TABLE devices;
