-- Bundles, groups, assignments, rules, menus, settings, tokens: the admin
-- model of issue 4. The per-device `work` table is converted into one
-- bundle per device (legacy-<mac without colons>) plus a device
-- assignment, then dropped.

-- +goose Up
ALTER TABLE devices ADD COLUMN asset_tag TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN notes TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN registered BOOLEAN NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN ram_bytes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN disk_bytes INTEGER NOT NULL DEFAULT 0;
-- revisits counts the sightings that found the device already known
-- (SeeDevice's upsert inserts 0, so 0 in its RETURNING means "created").
ALTER TABLE devices ADD COLUMN revisits INTEGER NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN applied_bundle_id INTEGER NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN applied_bundle TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN applied_version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN applied_job INTEGER NOT NULL DEFAULT 0;
ALTER TABLE devices ADD COLUMN applied_at INTEGER NOT NULL DEFAULT 0;
-- Device names become unique: should two devices share one, the later
-- gets its id appended.
UPDATE devices SET name = name || '-' || id
WHERE name <> '' AND id NOT IN (SELECT min(id) FROM devices WHERE name <> '' GROUP BY name);
CREATE UNIQUE INDEX devices_name ON devices (name) WHERE name <> '';

ALTER TABLE events ADD COLUMN job INTEGER NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN actor TEXT NOT NULL DEFAULT '';
DROP INDEX events_mac_time;
CREATE INDEX events_mac_id ON events (mac, id);
CREATE INDEX events_job_id ON events (job, id) WHERE job <> 0;
CREATE INDEX events_kind_id ON events (kind, id);

CREATE TABLE bundles (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    kind         TEXT NOT NULL,
    description  TEXT NOT NULL DEFAULT '',
    params       TEXT NOT NULL DEFAULT '{}',
    image        TEXT NOT NULL DEFAULT '',
    version      INTEGER NOT NULL DEFAULT 1,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX bundles_image ON bundles (image) WHERE image <> '';

CREATE TABLE device_groups (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    description  TEXT NOT NULL DEFAULT '',
    priority     INTEGER NOT NULL UNIQUE,
    match_expr   TEXT NOT NULL DEFAULT '',
    members      INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);

CREATE TABLE group_members (
    group_id  INTEGER NOT NULL REFERENCES device_groups (id) ON DELETE CASCADE,
    mac       TEXT NOT NULL REFERENCES devices (mac) ON DELETE CASCADE,
    PRIMARY KEY (group_id, mac)
);
CREATE INDEX group_members_mac ON group_members (mac);

CREATE TABLE assignments (
    id          INTEGER PRIMARY KEY,
    bundle_id   INTEGER NOT NULL REFERENCES bundles (id),
    mac         TEXT REFERENCES devices (mac) ON DELETE CASCADE,
    group_id    INTEGER REFERENCES device_groups (id) ON DELETE CASCADE,
    once        BOOLEAN NOT NULL DEFAULT 0,
    force       BOOLEAN NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    CHECK ((mac IS NULL) <> (group_id IS NULL))
);
CREATE UNIQUE INDEX assignments_mac ON assignments (mac) WHERE mac IS NOT NULL;
CREATE UNIQUE INDEX assignments_group ON assignments (group_id) WHERE group_id IS NOT NULL;
CREATE INDEX assignments_bundle ON assignments (bundle_id);

CREATE TABLE rules (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    pos         INTEGER NOT NULL,
    enabled     BOOLEAN NOT NULL DEFAULT 1,
    match_expr  TEXT NOT NULL DEFAULT '',
    bundle_id   INTEGER REFERENCES bundles (id),
    group_id    INTEGER REFERENCES device_groups (id),
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX rules_pos ON rules (pos);
CREATE INDEX rules_bundle ON rules (bundle_id);
CREATE INDEX rules_group ON rules (group_id);

CREATE TABLE menus (
    scope   TEXT NOT NULL,
    target  TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (scope, target)
);

CREATE TABLE settings (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    value  TEXT NOT NULL
);

CREATE TABLE policy (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    version  INTEGER NOT NULL
);
INSERT INTO policy (id, version) VALUES (1, 1);

CREATE TABLE tokens (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    hash        TEXT NOT NULL UNIQUE,
    prefix      TEXT NOT NULL DEFAULT '',
    created_at  INTEGER NOT NULL,
    last_used   INTEGER NOT NULL DEFAULT 0
);

ALTER TABLE jobs ADD COLUMN bundle_id INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN bundle TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN bundle_version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN assignment_id INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN params TEXT NOT NULL DEFAULT '';
CREATE INDEX jobs_bundle ON jobs (bundle, id);

-- Each device's work becomes a bundle of its own and a device assignment.
-- Imaging work (capture, restore) was cleared when its job succeeded:
-- apply-once. Boot work keeps its once flag.
INSERT INTO bundles (name, kind, description, params, image, version, created_at, updated_at)
SELECT 'legacy-' || replace(mac, ':', ''),
       CASE kind WHEN 'capture' THEN 'image-capture' WHEN 'restore' THEN 'image-restore' ELSE 'os-install' END,
       'converted from the work assigned to ' || mac || ' before bundles existed',
       CASE kind
           WHEN 'capture' THEN json_object('image', image, 'compression', compression, 'device', device, 'after', after)
           WHEN 'restore' THEN json_object('image', image, 'device', device, 'after', after)
           ELSE json_object('kernel', kernel, 'initrd', json(initrd), 'cmdline', cmdline, 'loader', loader)
       END,
       CASE WHEN kind IN ('capture', 'restore') THEN image ELSE '' END,
       1, created_at, created_at
FROM work ORDER BY mac;

INSERT INTO assignments (bundle_id, mac, once, force, created_at)
SELECT b.id, w.mac, CASE WHEN w.kind IN ('capture', 'restore') THEN 1 ELSE w.once <> 0 END, 0, w.created_at
FROM work w JOIN bundles b ON b.name = 'legacy-' || replace(w.mac, ':', '')
ORDER BY w.mac;

UPDATE devices SET registered = 1 WHERE mac IN (SELECT mac FROM work);

DROP TABLE work;

-- +goose Down
CREATE TABLE work (
    mac         TEXT PRIMARY KEY REFERENCES devices (mac) ON DELETE CASCADE,
    kernel      TEXT NOT NULL,
    initrd      TEXT NOT NULL DEFAULT '[]',
    cmdline     TEXT NOT NULL DEFAULT '',
    loader      TEXT NOT NULL DEFAULT 'ipxe',
    once        INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    kind        TEXT NOT NULL DEFAULT 'boot',
    image       TEXT NOT NULL DEFAULT '',
    after       TEXT NOT NULL DEFAULT 'reboot',
    compression INTEGER NOT NULL DEFAULT 0,
    device      TEXT NOT NULL DEFAULT ''
);
-- Device assignments of the kinds work could express go back to work.
INSERT INTO work (mac, kernel, initrd, cmdline, loader, once, created_at, kind, image, after, compression, device)
SELECT a.mac,
       coalesce(json_extract(b.params, '$.kernel'), ''),
       coalesce(json_extract(b.params, '$.initrd'), '[]'),
       coalesce(json_extract(b.params, '$.cmdline'), ''),
       coalesce(nullif(json_extract(b.params, '$.loader'), ''), 'ipxe'),
       a.once, a.created_at,
       CASE b.kind WHEN 'image-capture' THEN 'capture' WHEN 'image-restore' THEN 'restore' ELSE 'boot' END,
       b.image,
       coalesce(nullif(json_extract(b.params, '$.after'), ''), 'reboot'),
       coalesce(json_extract(b.params, '$.compression'), 0),
       coalesce(json_extract(b.params, '$.device'), '')
FROM assignments a JOIN bundles b ON b.id = a.bundle_id
WHERE a.mac IS NOT NULL AND b.kind IN ('image-capture', 'image-restore', 'os-install')
  AND json_extract(b.params, '$.chain') IS NULL;

DROP INDEX jobs_bundle;
ALTER TABLE jobs DROP COLUMN params;
ALTER TABLE jobs DROP COLUMN assignment_id;
ALTER TABLE jobs DROP COLUMN bundle_version;
ALTER TABLE jobs DROP COLUMN bundle;
ALTER TABLE jobs DROP COLUMN bundle_id;
DROP TABLE tokens;
DROP TABLE policy;
DROP TABLE settings;
DROP TABLE menus;
DROP TABLE rules;
DROP TABLE assignments;
DROP TABLE group_members;
DROP TABLE device_groups;
DROP TABLE bundles;
DROP INDEX events_kind_id;
DROP INDEX events_job_id;
DROP INDEX events_mac_id;
CREATE INDEX events_mac_time ON events (mac, time);
ALTER TABLE events DROP COLUMN actor;
ALTER TABLE events DROP COLUMN job;
DROP INDEX devices_name;
ALTER TABLE devices DROP COLUMN applied_at;
ALTER TABLE devices DROP COLUMN applied_job;
ALTER TABLE devices DROP COLUMN applied_version;
ALTER TABLE devices DROP COLUMN applied_bundle;
ALTER TABLE devices DROP COLUMN applied_bundle_id;
ALTER TABLE devices DROP COLUMN revisits;
ALTER TABLE devices DROP COLUMN disk_bytes;
ALTER TABLE devices DROP COLUMN ram_bytes;
ALTER TABLE devices DROP COLUMN registered;
ALTER TABLE devices DROP COLUMN notes;
ALTER TABLE devices DROP COLUMN asset_tag;
