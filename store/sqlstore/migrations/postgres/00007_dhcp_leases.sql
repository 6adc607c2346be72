-- Leases of the embedded DHCP server: one row per IPv4 address ever
-- offered (ip is the address as an unsigned 32-bit number). The primary
-- key and the unique client index are what keeps two servers sharing the
-- database from handing out one address twice.

-- +goose Up
CREATE TABLE dhcp_leases (
    ip        BIGINT PRIMARY KEY,
    client_id TEXT,
    mac       TEXT NOT NULL DEFAULT '',
    hostname  TEXT NOT NULL DEFAULT '',
    state     TEXT NOT NULL,
    expires   BIGINT NOT NULL,
    updated   BIGINT NOT NULL,
    server    TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX dhcp_leases_client ON dhcp_leases (client_id);
CREATE INDEX dhcp_leases_expires ON dhcp_leases (expires);

-- +goose Down
DROP TABLE dhcp_leases;
