-- Sites: a remote site's server (a site server replicating this one's
-- images) and the subnets of its devices. subnets is a JSON array of CIDR
-- prefixes (IPv4 or IPv6); a device whose boot request comes from one of
-- them fetches its image data from server_url (pinned by pin). Tokens get
-- a scope: '' (admin, everything) or 'replication' (read images and
-- introspect job tokens, nothing else).

-- +goose Up
CREATE TABLE sites (
	id INTEGER PRIMARY KEY,
	name TEXT NOT NULL UNIQUE,
	subnets TEXT NOT NULL DEFAULT '[]',
	server_url TEXT NOT NULL,
	pin TEXT NOT NULL DEFAULT '',
	created_at INTEGER NOT NULL DEFAULT 0,
	updated_at INTEGER NOT NULL DEFAULT 0
);
ALTER TABLE tokens ADD COLUMN scope TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE tokens DROP COLUMN scope;
DROP TABLE sites;
