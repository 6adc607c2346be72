-- Leases of the embedded DHCPv6 server: one row per IPv6 address ever
-- offered (ip is the address's 16 bytes, which sort as the addresses do;
-- client_id is the client's DUID and IAID, "duid-hex/iaid-hex"). As for
-- dhcp_leases, the primary key and the unique client index keep two
-- servers sharing the database from handing out one address twice.

-- +goose Up
CREATE TABLE dhcp6_leases (
    ip        BYTEA PRIMARY KEY,
    client_id TEXT,
    mac       TEXT NOT NULL DEFAULT '',
    hostname  TEXT NOT NULL DEFAULT '',
    state     TEXT NOT NULL,
    expires   BIGINT NOT NULL,
    updated   BIGINT NOT NULL,
    server    TEXT NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX dhcp6_leases_client ON dhcp6_leases (client_id);
CREATE INDEX dhcp6_leases_expires ON dhcp6_leases (expires);

-- +goose Down
DROP TABLE dhcp6_leases;
