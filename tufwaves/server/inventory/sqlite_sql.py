"""The SQL of the embedded SQLite inventory: its schema and every statement.

:mod:`tufwaves.server.inventory.sqlite` holds the logic; this module only
text. ``specs/inventory.md`` describes the schema.
"""

from __future__ import annotations

SCHEMA_VERSION = 3
"""Stored in ``PRAGMA user_version``; 0 means a new, empty file.

Schema 2 added ``device_keys`` and ``reports`` (``UPGRADE_2``); schema 3 keys
``selections`` by (device, wave) without a row id (``UPGRADE_3``). An older
file is upgraded in place when it is opened for writing.
"""

# Schema 3: a selection is keyed by (device, wave), without a row id: two
# b-trees to write per selected device (the table and the ripple index) where
# schemas 1 and 2 wrote four (SELECTIONS_2). The key also finds a device's
# selections and answers "did this wave select this device?".
SELECTIONS = """CREATE TABLE selections (
        wave_id INTEGER NOT NULL,
        ripple INTEGER NOT NULL,
        device_id INTEGER NOT NULL REFERENCES devices (id),
        PRIMARY KEY (device_id, wave_id),
        FOREIGN KEY (wave_id, ripple) REFERENCES ripples (wave_id, idx)
    ) STRICT, WITHOUT ROWID"""
SELECTIONS_RIPPLE = "CREATE INDEX selections_ripple ON selections (wave_id, ripple)"

SET_VERSION = f"PRAGMA user_version = {SCHEMA_VERSION:d}"

SCHEMA = (
    """CREATE TABLE devices (
        id INTEGER PRIMARY KEY,
        uuid TEXT NOT NULL,
        ring INTEGER NOT NULL,
        hardware_id TEXT NOT NULL,
        tag TEXT NOT NULL,
        installed_version INTEGER CHECK (installed_version >= 0),
        last_seen INTEGER
    ) STRICT""",
    "CREATE UNIQUE INDEX devices_uuid ON devices (uuid)",
    "CREATE INDEX devices_tag_ring ON devices (tag, ring)",
    """CREATE TABLE groups (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE
    ) STRICT""",
    """CREATE TABLE device_groups (
        group_id INTEGER NOT NULL REFERENCES groups (id),
        device_id INTEGER NOT NULL REFERENCES devices (id),
        PRIMARY KEY (group_id, device_id)
    ) STRICT, WITHOUT ROWID""",
    "CREATE INDEX device_groups_device ON device_groups (device_id, group_id)",
    """CREATE TABLE waves (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE
    ) STRICT""",
    """CREATE TABLE ripples (
        wave_id INTEGER NOT NULL REFERENCES waves (id),
        idx INTEGER NOT NULL CHECK (idx >= 1),
        created INTEGER NOT NULL,
        selector TEXT NOT NULL,
        devices INTEGER NOT NULL CHECK (devices >= 0),
        encoding TEXT NOT NULL,
        PRIMARY KEY (wave_id, idx)
    ) STRICT, WITHOUT ROWID""",
    SELECTIONS,  # schema 3 (UPGRADE_3)
    SELECTIONS_RIPPLE,
    """CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at INTEGER NOT NULL,
        action TEXT NOT NULL,
        key_ids TEXT NOT NULL,
        arguments TEXT NOT NULL
    ) STRICT""",
    """CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    """CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    # schema 2 (also UPGRADE_2 below)
    "CREATE TABLE device_keys (device_id INTEGER PRIMARY KEY REFERENCES devices (id),"
    " public_key TEXT NOT NULL) STRICT",
    """CREATE TABLE reports (
        id INTEGER PRIMARY KEY,
        device_id INTEGER NOT NULL REFERENCES devices (id),
        counter INTEGER NOT NULL CHECK (counter >= 1),
        wave TEXT NOT NULL,
        ripple INTEGER NOT NULL,
        version INTEGER NOT NULL,
        status TEXT NOT NULL,
        code TEXT,
        installed_version INTEGER,
        device_time INTEGER NOT NULL,
        received INTEGER NOT NULL,
        digest TEXT NOT NULL,
        envelope TEXT NOT NULL,
        UNIQUE (device_id, counter)
    ) STRICT""",
    "CREATE INDEX reports_wave ON reports (wave, device_id, counter)",
    SET_VERSION,
)

UPGRADE_2 = SCHEMA[-4:-1]
"""From schema 1 to 2: the device keys and reports tables (additive)."""

SELECTIONS_2 = (
    """CREATE TABLE selections (
        wave_id INTEGER NOT NULL,
        ripple INTEGER NOT NULL,
        device_id INTEGER NOT NULL REFERENCES devices (id),
        UNIQUE (wave_id, device_id),
        FOREIGN KEY (wave_id, ripple) REFERENCES ripples (wave_id, idx)
    ) STRICT""",
    "CREATE INDEX selections_ripple ON selections (wave_id, ripple)",
    "CREATE INDEX selections_device ON selections (device_id)",
)
"""``selections`` in schemas 1 and 2."""

UPGRADE_3 = (
    "ALTER TABLE selections RENAME TO selections_2",
    "DROP INDEX selections_ripple",
    "DROP INDEX selections_device",
    SELECTIONS,
    "INSERT INTO selections (wave_id, ripple, device_id) "
    "SELECT wave_id, ripple, device_id FROM selections_2 ORDER BY device_id, wave_id",
    "DROP TABLE selections_2",
    SELECTIONS_RIPPLE,
)
"""From schema 2 to 3: ``selections`` rebuilt with its rows (same names, same
rows; ``SELECTIONS_2`` was the old definition)."""


def query(*fragments: str) -> str:
    """Join constant SQL fragments of this module into one statement.

    Only the module's own literal fragments are ever joined; every value is a
    bound parameter.
    """
    return " ".join(fragments)


# -- statements --------------------------------------------------------------

# An import first appends every validated row to a temporary table (rowid =
# line number), indexes it by UUID in one sort (which also finds a UUID that
# appears twice), then applies it with a few set-based statements: devices go
# in in UUID order, which keeps the UUID index append-mostly, and group rows
# need no per-row round trip from Python.
STAGE_CREATE = """
CREATE TEMP TABLE import_rows (
    line INTEGER PRIMARY KEY,
    uuid TEXT NOT NULL,
    ring INTEGER NOT NULL,
    hardware_id TEXT NOT NULL,
    tag TEXT NOT NULL,
    installed_version INTEGER,
    groups TEXT
)
"""
STAGE_DROP = "DROP TABLE IF EXISTS temp.import_rows"
STAGE_ROW = "INSERT INTO temp.import_rows VALUES (?, ?, ?, ?, ?, ?, ?)"
STAGE_INDEX = "CREATE UNIQUE INDEX temp.import_rows_uuid ON import_rows (uuid)"
STAGE_DUPLICATE = """
SELECT a.line, b.line, a.uuid FROM temp.import_rows AS a
JOIN temp.import_rows AS b ON b.uuid = a.uuid AND b.line > a.line
ORDER BY b.line LIMIT 1
"""
STAGE_UNCHANGED = """
SELECT count(*) FROM temp.import_rows AS r JOIN devices AS d ON d.uuid = r.uuid
WHERE d.hardware_id = r.hardware_id AND d.tag = r.tag
  AND (r.installed_version IS NULL OR d.installed_version IS r.installed_version)
  AND coalesce(r.groups, '[]') = (
    SELECT coalesce(json_group_array(name), '[]') FROM (
        SELECT g.name FROM device_groups AS dg JOIN groups AS g ON g.id = dg.group_id
        WHERE dg.device_id = d.id ORDER BY g.name))
"""
STAGE_CLEAR_GROUPS = """
DELETE FROM device_groups WHERE device_id IN (
    SELECT d.id FROM temp.import_rows AS r JOIN devices AS d ON d.uuid = r.uuid)
"""
STAGE_UPSERT = """
INSERT INTO devices (uuid, ring, hardware_id, tag, installed_version)
SELECT uuid, ring, hardware_id, tag, installed_version
FROM temp.import_rows INDEXED BY import_rows_uuid WHERE true ORDER BY uuid
ON CONFLICT (uuid) DO UPDATE SET
    hardware_id = excluded.hardware_id,
    tag = excluded.tag,
    installed_version = coalesce(excluded.installed_version, installed_version)
"""
STAGE_GROUPS = """
INSERT INTO groups (name)
SELECT DISTINCT j.value FROM temp.import_rows AS r, json_each(r.groups) AS j
WHERE r.groups IS NOT NULL
ON CONFLICT (name) DO NOTHING
"""
STAGE_MEMBERSHIPS = """
INSERT OR IGNORE INTO device_groups (group_id, device_id)
SELECT g.id, d.id
FROM temp.import_rows AS r INDEXED BY import_rows_uuid
JOIN devices AS d ON d.uuid = r.uuid
JOIN json_each(r.groups) AS j
JOIN groups AS g ON g.name = j.value
WHERE r.groups IS NOT NULL
ORDER BY r.uuid
"""

# The first import into an empty inventory loads the tables without their
# secondary indexes and builds those afterwards, in the same transaction (one
# sort per index instead of a b-tree insertion per row); the statements are
# those of SCHEMA (a test checks it), so the file ends up the same.
EMPTY_INVENTORY = """
SELECT NOT EXISTS (SELECT 1 FROM devices) AND NOT EXISTS (SELECT 1 FROM groups)
"""
BULK_DROP = (
    "DROP INDEX device_groups_device",
    "DROP INDEX devices_tag_ring",
    "DROP INDEX devices_uuid",
)
# The staged rows are copied once into a temporary table in UUID order (one
# sort, no index): its n-th row becomes device n (the row ids of an empty
# table start at 1), so devices and memberships are both sequential reads
# and memberships need no lookup of the UUID index. A UUID given twice makes
# the unique index fail; the staged rows then name the lines.
BULK_SORT = """
CREATE TEMP TABLE import_sorted AS
SELECT uuid, ring, hardware_id, tag, installed_version, groups
FROM temp.import_rows NOT INDEXED ORDER BY uuid
"""
BULK_SORTED_DROP = "DROP TABLE IF EXISTS temp.import_sorted"
BULK_DEVICES = """
INSERT INTO devices (uuid, ring, hardware_id, tag, installed_version)
SELECT uuid, ring, hardware_id, tag, installed_version
FROM temp.import_sorted ORDER BY rowid
"""
BULK_DEVICE_INDEXES = (  # the unique one first: it finds a UUID given twice
    "CREATE UNIQUE INDEX devices_uuid ON devices (uuid)",
    "CREATE INDEX devices_tag_ring ON devices (tag, ring)",
)
# The distinct group names, collected while the rows were read, in name order.
BULK_GROUP = "INSERT INTO groups (name) VALUES (?)"
# The memberships: every staged row's groups (the JSON text of a sorted tuple
# of names) looked up in the few distinct combinations, each expanded to its
# group ids. Rows come in device order, so each group's part of the key only
# grows: a handful of b-tree insertion points, no sort.
COMBOS_CREATE = """
CREATE TEMP TABLE import_combos (
    groups TEXT NOT NULL,
    group_id INTEGER NOT NULL,
    PRIMARY KEY (groups, group_id)
) WITHOUT ROWID
"""
COMBOS_ROW = "INSERT INTO temp.import_combos (groups, group_id) VALUES (?, ?)"
COMBOS_DROP = "DROP TABLE IF EXISTS temp.import_combos"
BULK_MEMBERSHIPS = """
INSERT INTO device_groups (group_id, device_id)
SELECT c.group_id, r.rowid
FROM temp.import_sorted AS r CROSS JOIN temp.import_combos AS c ON c.groups = r.groups
"""
BULK_GROUP_INDEXES = ("CREATE INDEX device_groups_device ON device_groups (device_id, group_id)",)
# While a first import loads: two worker threads for the sorter, and a small
# page cache, because the cache size is also the size of the runs the sorter
# cuts its input into: runs of 4 MiB are sorted by the worker threads while
# the main thread reads on, each in the processor's cache, then merged. At
# 10^7 devices this took the copy in UUID order from 17.9 s to 6.3 s and the
# (tag, ring) index from 16.4 s to 6.0 s against 1 GiB of cache and no threads.
IMPORT_CACHE = ("PRAGMA cache_size = -4096", "PRAGMA threads = 2")
NORMAL_CACHE = ("PRAGMA cache_size = -131072", "PRAGMA threads = 0")  # as _configure sets

DEVICE = """
SELECT d.uuid, d.hardware_id, d.tag, d.installed_version, d.last_seen,
    (SELECT group_concat(g.name, ';')
     FROM device_groups AS dg JOIN groups AS g ON g.id = dg.group_id
     WHERE dg.device_id = d.id)
FROM devices AS d
"""
GET = query(DEVICE, "WHERE d.uuid = ?")
LIST = query(
    DEVICE,
    """
WHERE (:tag IS NULL OR d.tag = :tag)
  AND (:group IS NULL OR d.id IN (
      SELECT dg.device_id FROM device_groups AS dg
      WHERE dg.group_id = (SELECT g.id FROM groups AS g WHERE g.name = :group)))
ORDER BY d.uuid
LIMIT coalesce(:limit, -1)
""",
)

# Eligibility of a device ``d`` for a wave. Parameters: tag, hw (JSON array of
# hardware ids), version, wave, group (NULL for any).
MATCHES = """
    d.tag = :tag
    AND d.hardware_id IN (SELECT value FROM json_each(:hw))
    AND (d.installed_version IS NULL OR d.installed_version < :version)
"""
# "Not selected by the wave" two ways, same rows: a probe of the (wave, device)
# index per candidate (for walks that stop early), or one list of the wave's
# selections built first and looked up per row (for passes over every row).
NOT_SELECTED_PROBE = """
    AND NOT EXISTS (
        SELECT 1 FROM selections AS s
        WHERE s.wave_id = (SELECT w.id FROM waves AS w WHERE w.name = :wave)
          AND s.device_id = d.id)
"""
NOT_SELECTED_LIST = """
    AND d.id NOT IN (
        SELECT s.device_id FROM selections AS s
        WHERE s.wave_id = (SELECT w.id FROM waves AS w WHERE w.name = :wave))
"""
ELIGIBLE = MATCHES + NOT_SELECTED_PROBE
ELIGIBLE_SCAN = MATCHES + NOT_SELECTED_LIST
# Group membership, also two ways: a list of the group's members built first
# (a pass over every row), or a probe of the (group, device) key per candidate,
# which lets a ring walk that stops after k rows return without reading the
# whole group first.
IN_GROUP = """
    AND d.id IN (
        SELECT dg.device_id FROM device_groups AS dg
        WHERE dg.group_id = (SELECT g.id FROM groups AS g WHERE g.name = :group))
"""
IN_GROUP_PROBE = """
    AND EXISTS (
        SELECT 1 FROM device_groups AS dg
        WHERE dg.group_id = (SELECT g.id FROM groups AS g WHERE g.name = :group)
          AND dg.device_id = d.id)
"""
GROUP_ID = "(SELECT g.id FROM groups AS g WHERE g.name = :group)"
# Where the candidate devices come from. CROSS JOIN fixes the loop order.
FROM_DEVICES = "FROM devices AS d"
FROM_DEVICES_BY_UUID = "FROM devices AS d INDEXED BY devices_uuid"
FROM_DEVICES_SCAN = "FROM devices AS d NOT INDEXED"
FROM_GROUP = (
    "FROM device_groups AS dg CROSS JOIN devices AS d ON d.id = dg.device_id "
    "WHERE dg.group_id = " + GROUP_ID + " AND"
)
FROM_WITHIN = "FROM temp.within_devices AS w CROSS JOIN devices AS d ON d.id = w.id WHERE"
RING_FROM = "d.ring >= :start AND"
RING_BEFORE = "d.ring < :start AND"
BY_RING = "ORDER BY d.ring, d.uuid LIMIT :k"
BY_UUID = "ORDER BY d.uuid"
BY_RING_DESC = "ORDER BY d.ring DESC, d.uuid DESC LIMIT :k"
# The devices a rollout chose (select_sorted), by row id, until recorded.
CHOSEN_CREATE = "CREATE TEMP TABLE IF NOT EXISTS chosen (id INTEGER PRIMARY KEY)"
CHOSEN_CLEAR = "DELETE FROM temp.chosen"
CHOSEN_INSERT = "INSERT INTO temp.chosen (id) SELECT d.id"
CHOSEN_UUIDS = "SELECT d.uuid FROM temp.chosen AS c CROSS JOIN devices AS d ON d.id = c.id"
CHOSEN_RECORD = """
INSERT INTO selections (wave_id, ripple, device_id)
SELECT ?, ?, c.id FROM temp.chosen AS c ORDER BY c.id
"""
# The end of a walk that a selection of nearly every eligible device leaves out.
PASSED_CREATE = "CREATE TEMP TABLE IF NOT EXISTS passed_over (id INTEGER PRIMARY KEY)"
PASSED_CLEAR = "DELETE FROM temp.passed_over"
PASSED_INSERT = "INSERT INTO temp.passed_over (id) SELECT d.id"
NOT_PASSED = "AND d.id NOT IN (SELECT p.id FROM temp.passed_over AS p)"
GROUP_SAMPLE = """
SELECT count(*) FROM (
    SELECT 1 FROM device_groups
    WHERE group_id = (SELECT g.id FROM groups AS g WHERE g.name = :group)
    LIMIT :cap)
"""
# Does a tag cover at least :cap devices? (Counting stops there.)
TAG_AT_LEAST = """
SELECT count(*) >= :cap FROM (
    SELECT 1 FROM devices INDEXED BY devices_tag_ring WHERE tag = :tag LIMIT :cap)
"""
FLEET_SIZE = "SELECT coalesce(max(id), 0) FROM devices"

# While a wave has selected few devices, a pass over many rows is cheaper
# without looking every row up in the list of the wave's selections: count or
# take the devices that match, then take the selected ones away.
SELECTED_FEW = """
SELECT count(*) < :cap FROM (
    SELECT 1 FROM selections
    WHERE wave_id = (SELECT w.id FROM waves AS w WHERE w.name = :wave) LIMIT :cap)
"""
COUNT_MATCHING = "SELECT (SELECT count(*)"
MINUS_SELECTED = """) - (
    SELECT count(*) FROM selections AS s CROSS JOIN devices AS d ON d.id = s.device_id
    WHERE s.wave_id = (SELECT w.id FROM waves AS w WHERE w.name = :wave) AND
"""
COUNT_END = ")"
CHOSEN_UNSELECT = """
DELETE FROM temp.chosen WHERE id IN (
    SELECT s.device_id FROM selections AS s
    WHERE s.wave_id = (SELECT w.id FROM waves AS w WHERE w.name = :wave))
"""

# A cut walk (select_sorted, large k): the ring positions of eligible devices
# among every :step-th row id (a sample), then every eligible device between
# :start and the estimated :cut in one unordered pass, then the walk's exact
# end: surplus devices removed from the end of the window, or missing ones
# added after it.
CUT_SAMPLE = """
WITH RECURSIVE sample(x) AS (
    SELECT 1 UNION ALL SELECT x + :step FROM sample WHERE x + :step <= :last)
SELECT d.ring FROM sample CROSS JOIN devices AS d ON d.id = sample.x WHERE
"""
RING_WINDOW = "d.ring >= :start AND d.ring < :cut AND"
RING_WRAPPED = "(d.ring >= :start OR d.ring < :cut) AND"
RING_FROM_CUT = "d.ring >= :cut AND"
RING_BEFORE_CUT = "d.ring < :cut AND"
RING_CUT_TO_START = "d.ring >= :cut AND d.ring < :start AND"
CUT_TRIM = (
    "DELETE FROM temp.chosen WHERE id IN "
    "(SELECT d.id FROM devices AS d INDEXED BY devices_tag_ring WHERE"
)
IS_CHOSEN = "d.tag = :tag AND d.id IN (SELECT c.id FROM temp.chosen AS c)"
CUT_TRIM_END = ")"
# Rows sampled for a cut walk: the estimate's error, and so the surplus to
# remove, shrinks with the square root of the sample.
CUT_SAMPLE_ROWS = 100_000

# From this many devices on, a ring walk over a large group or tag reads the
# table once in row order and sorts the eligible rows by ring (same order, same
# LIMIT), instead of jumping from the (tag, ring) index to a row per candidate.
SORTED_SCAN_MIN = 50_000

# A group with fewer members than this is walked member by member (then
# sorted) instead of walking the whole ring and probing membership.
SMALL_GROUP = 100_000


EXPLAIN = """
SELECT d.tag, d.hardware_id, d.installed_version,
    (SELECT s.ripple FROM selections AS s
     WHERE s.wave_id = (SELECT w.id FROM waves AS w WHERE w.name = :wave)
       AND s.device_id = d.id),
    (:group IS NULL OR EXISTS (
        SELECT 1 FROM device_groups AS dg JOIN groups AS g ON g.id = dg.group_id
        WHERE g.name = :group AND dg.device_id = d.id))
FROM devices AS d WHERE d.uuid = :uuid
"""

SELECTED_RIPPLE = """
SELECT s.ripple FROM selections AS s
WHERE s.wave_id = (SELECT w.id FROM waves AS w WHERE w.name = ?)
  AND s.device_id = (SELECT d.id FROM devices AS d WHERE d.uuid = ?)
"""
DEVICE_SELECTIONS = """
SELECT w.name, s.ripple FROM selections AS s JOIN waves AS w ON w.id = s.wave_id
WHERE s.device_id = (SELECT d.id FROM devices AS d WHERE d.uuid = ?)
ORDER BY w.name, s.ripple
"""
ADD_SELECTION = """
INSERT INTO selections (wave_id, ripple, device_id)
SELECT ?, ?, id FROM devices WHERE uuid = ?
"""
RIPPLES = """
SELECT w.name, r.idx, r.created, r.selector, r.devices, r.encoding
FROM ripples AS r JOIN waves AS w ON w.id = r.wave_id
WHERE w.name = ? ORDER BY r.idx
"""
MEMBERS = """
SELECT d.uuid FROM selections AS s JOIN devices AS d ON d.id = s.device_id
WHERE s.wave_id = (SELECT w.id FROM waves AS w WHERE w.name = ?) AND s.ripple = ?
ORDER BY d.uuid
"""

WAVE_SELECTIONS = """
SELECT d.uuid, s.ripple FROM selections AS s JOIN devices AS d ON d.id = s.device_id
WHERE s.wave_id = (SELECT w.id FROM waves AS w WHERE w.name = ?)
ORDER BY d.uuid
"""

# Per-group status. ``match`` = the wave's tag and one of its hardware ids.
STATUS_COLUMNS = """
    count(*),
    coalesce(sum(d.tag = :tag AND d.hardware_id IN (SELECT value FROM json_each(:hw))
        AND (d.installed_version IS NULL OR d.installed_version < :version)
        AND s.device_id IS NULL), 0),
    coalesce(sum(s.device_id IS NOT NULL), 0),
    coalesce(sum(d.tag = :tag AND d.hardware_id IN (SELECT value FROM json_each(:hw))
        AND d.installed_version >= :version), 0)
"""
STATUS_SELECTED = """
    LEFT JOIN selections AS s
        ON s.wave_id = (SELECT w.id FROM waves AS w WHERE w.name = :wave)
       AND s.device_id = d.id
"""
STATUS_GROUPS = query(
    "SELECT g.name,",
    STATUS_COLUMNS,
    """
FROM groups AS g
JOIN device_groups AS dg ON dg.group_id = g.id
JOIN devices AS d ON d.id = dg.device_id
""",
    STATUS_SELECTED,
    "GROUP BY g.name ORDER BY g.name",
)
STATUS_UNGROUPED = query(
    "SELECT",
    STATUS_COLUMNS,
    "FROM devices AS d",
    STATUS_SELECTED,
    "WHERE NOT EXISTS (SELECT 1 FROM device_groups AS dg WHERE dg.device_id = d.id)",
)
STATUS_TOTAL = query("SELECT", STATUS_COLUMNS, "FROM devices AS d", STATUS_SELECTED)

AUDIT = """
INSERT INTO audit (at, action, key_ids, arguments) VALUES (?, ?, ?, ?)
RETURNING id
"""
AUDIT_LOG = """
SELECT id, at, action, key_ids, arguments FROM (
    SELECT * FROM audit ORDER BY id DESC LIMIT coalesce(?, -1)
) ORDER BY id
"""

# -- device keys and reports (schema 2) ---------------------------------------

DEVICE_ID = "SELECT id FROM devices WHERE uuid = ?"
SET_KEY = """
INSERT INTO device_keys (device_id, public_key) VALUES (?, ?)
ON CONFLICT (device_id) DO UPDATE SET public_key = excluded.public_key
"""
CLEAR_KEY = "DELETE FROM device_keys WHERE device_id = ?"
GET_KEY = """
SELECT k.public_key FROM device_keys AS k JOIN devices AS d ON d.id = k.device_id
WHERE d.uuid = ?
"""
STAGE_KEY = """
INSERT INTO device_keys (device_id, public_key)
SELECT d.id, ? FROM devices AS d WHERE d.uuid = ?
ON CONFLICT (device_id) DO UPDATE SET public_key = excluded.public_key
"""
LAST_REPORT = """
SELECT counter, digest FROM reports WHERE device_id = ? ORDER BY counter DESC LIMIT 1
"""
SAME_REPORT = "SELECT 1 FROM reports WHERE device_id = ? AND counter = ? AND digest = ?"
ADD_REPORT = """
INSERT INTO reports (device_id, counter, wave, ripple, version, status, code,
    installed_version, device_time, received, digest, envelope)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
REPORT_INSTALLED = """
UPDATE devices SET installed_version = ?, last_seen = max(coalesce(last_seen, 0), ?)
WHERE id = ?
"""
REPORT_SEEN = "UPDATE devices SET last_seen = max(coalesce(last_seen, 0), ?) WHERE id = ?"
REPORT_COUNTS = """
SELECT r.ripple, count(*),
       sum(CASE WHEN r.status = 'installed' THEN 1 ELSE 0 END),
       sum(CASE WHEN r.status IN ('failed', 'rolled_back') THEN 1 ELSE 0 END)
FROM reports AS r
JOIN (SELECT device_id, max(counter) AS counter FROM reports WHERE wave = ?
      GROUP BY device_id) AS latest
  ON latest.device_id = r.device_id AND latest.counter = r.counter
GROUP BY r.ripple ORDER BY r.ripple
"""
REPORT_COLUMNS = """
SELECT d.uuid, r.wave, r.ripple, r.version, r.status, r.code, r.installed_version,
       r.counter, r.device_time, r.received
FROM reports AS r JOIN devices AS d ON d.id = r.device_id
"""
RECENT_FAILURES = query(
    REPORT_COLUMNS,
    "WHERE r.wave = ? AND r.status IN ('failed', 'rolled_back')",
    "ORDER BY r.received DESC, r.id DESC LIMIT ?",
)
DEVICE_REPORTS = query(REPORT_COLUMNS, "WHERE d.uuid = ? ORDER BY r.counter DESC LIMIT ?")
LATEST_REPORTS = query(
    REPORT_COLUMNS,
    """JOIN (SELECT device_id, max(counter) AS counter FROM reports WHERE wave = ?
      GROUP BY device_id) AS latest
  ON latest.device_id = r.device_id AND latest.counter = r.counter
ORDER BY d.uuid""",
)
