//! Versioned schema migrations of the embedded store, applied on open (STO-5).
//!
//! `PRAGMA user_version` holds the applied version. Migrations are append-only: never edit one
//! that has shipped; add the next.

use rusqlite::Connection;

use crate::{Result, StoreError};

/// Every migration, in order; the version of `MIGRATIONS[i]` is `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: foundation. Entity tables first, then the append-only event tables.
    r#"
    CREATE TABLE accounts (
        id            INTEGER PRIMARY KEY,
        email         TEXT NOT NULL UNIQUE COLLATE NOCASE,
        password_hash TEXT NOT NULL,
        role          TEXT NOT NULL,
        created_at    INTEGER NOT NULL
    );
    CREATE TABLE sessions (
        token_hash BLOB PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE enterprises (
        id         INTEGER PRIMARY KEY,
        name       TEXT NOT NULL,
        credential TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE devices (
        id            INTEGER PRIMARY KEY,
        enterprise_id INTEGER NOT NULL REFERENCES enterprises(id),
        mac           TEXT UNIQUE,
        serial        TEXT,
        model         TEXT NOT NULL,
        firmware      TEXT NOT NULL,
        name          TEXT NOT NULL DEFAULT '',
        created_at    INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX devices_serial_without_mac ON devices(serial) WHERE mac IS NULL;
    CREATE INDEX devices_enterprise ON devices(enterprise_id, id);

    CREATE TABLE delivery_marks (
        device_id INTEGER PRIMARY KEY,
        last_seq  INTEGER NOT NULL
    );
    CREATE TABLE status_events (
        device_id     INTEGER NOT NULL,
        enterprise_id INTEGER NOT NULL,
        seq           INTEGER NOT NULL,
        at            INTEGER NOT NULL,
        sip_summary   TEXT NOT NULL,
        call_status   TEXT NOT NULL,
        firmware      TEXT NOT NULL,
        public_ip     TEXT,
        private_ip    TEXT,
        uptime_s      INTEGER NOT NULL,
        last_reboot   INTEGER,
        lines         TEXT NOT NULL
    );
    CREATE INDEX status_events_device ON status_events(device_id, seq);
    CREATE TABLE resource_reports (
        device_id     INTEGER NOT NULL,
        enterprise_id INTEGER NOT NULL,
        seq           INTEGER NOT NULL,
        at            INTEGER NOT NULL,
        cpu_centi_pct INTEGER NOT NULL,
        mem_used      INTEGER NOT NULL,
        mem_total     INTEGER NOT NULL
    );
    CREATE INDEX resource_reports_device ON resource_reports(device_id, seq);
    CREATE TABLE alarm_events (
        device_id     INTEGER NOT NULL,
        enterprise_id INTEGER NOT NULL,
        seq           INTEGER NOT NULL,
        at            INTEGER NOT NULL,
        code          INTEGER NOT NULL,
        clear         INTEGER NOT NULL,
        description   TEXT NOT NULL,
        log           BLOB
    );
    CREATE INDEX alarm_events_device ON alarm_events(device_id, seq);
    CREATE TABLE alarm_records (
        id            INTEGER PRIMARY KEY,
        device_id     INTEGER NOT NULL,
        enterprise_id INTEGER NOT NULL,
        code          INTEGER NOT NULL,
        first_at      INTEGER NOT NULL,
        latest_at     INTEGER NOT NULL,
        count         INTEGER NOT NULL,
        description   TEXT NOT NULL,
        status        TEXT NOT NULL,
        cleared_at    INTEGER,
        UNIQUE (device_id, code)
    );
    CREATE INDEX alarm_records_enterprise ON alarm_records(enterprise_id, latest_at);
    "#,
    // 2: alarm strategies (ALM-3); the settings are one JSON document.
    r#"
    CREATE TABLE alarm_strategies (
        id            INTEGER PRIMARY KEY,
        enterprise_id INTEGER NOT NULL REFERENCES enterprises(id),
        settings      TEXT NOT NULL,
        created_at    INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL
    );
    CREATE INDEX alarm_strategies_enterprise ON alarm_strategies(enterprise_id, id);
    "#,
    // 3: alarm lifecycle (ALM-2): who acknowledged and who cleared by hand.
    r#"
    ALTER TABLE alarm_records ADD COLUMN acknowledged_at INTEGER;
    ALTER TABLE alarm_records ADD COLUMN acknowledged_by INTEGER;
    ALTER TABLE alarm_records ADD COLUMN cleared_by INTEGER;
    "#,
    // 4: the durable notification outbox (ALM-5): one row per idempotency key.
    r#"
    CREATE TABLE outbox (
        id              INTEGER PRIMARY KEY,
        key             TEXT NOT NULL UNIQUE,
        enterprise_id   INTEGER NOT NULL,
        receiver        TEXT NOT NULL,
        payload         TEXT NOT NULL,
        state           TEXT NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at INTEGER NOT NULL,
        last_error      TEXT,
        created_at      INTEGER NOT NULL,
        sent_at         INTEGER
    );
    CREATE INDEX outbox_due ON outbox(state, next_attempt_at);
    "#,
    // 5: outbox item keys (exactly-once notification items across restarts), and the latest
    // alarms feed (ALM-6): newest records first without scanning them all. The enterprise's
    // feed uses `alarm_records_enterprise` (enterprise_id, latest_at); both end in the rowid.
    r#"
    CREATE TABLE outbox_items (
        item_key   TEXT PRIMARY KEY,
        message_id INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX alarm_records_latest ON alarm_records(latest_at);
    "#,
    // 6: login protection (ACC-2): wrong passwords since the last success or lock, and the lock.
    r#"
    ALTER TABLE accounts ADD COLUMN failed_logins INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE accounts ADD COLUMN locked_until INTEGER;
    "#,
    // 7: the operation log (LOG-1), append-only: the triggers refuse every update and delete,
    // whoever issues them. Pages are read newest first by id (the rowid); the indexes serve
    // the filters by account, enterprise, operation type and time.
    r#"
    CREATE TABLE operation_log (
        id            INTEGER PRIMARY KEY,
        account_id    INTEGER,
        account_email TEXT NOT NULL,
        acting_as     INTEGER,
        operation     TEXT NOT NULL,
        method        TEXT NOT NULL,
        path          TEXT NOT NULL,
        ip            TEXT NOT NULL,
        at            INTEGER NOT NULL,
        status        INTEGER NOT NULL,
        outcome       TEXT NOT NULL
    );
    CREATE INDEX operation_log_account ON operation_log(account_id, id);
    CREATE INDEX operation_log_acting_as ON operation_log(acting_as, id);
    CREATE INDEX operation_log_operation ON operation_log(operation, id);
    CREATE INDEX operation_log_at ON operation_log(at);
    CREATE TRIGGER operation_log_no_update BEFORE UPDATE ON operation_log
    BEGIN
        SELECT RAISE(ABORT, 'operation log is append-only');
    END;
    CREATE TRIGGER operation_log_no_delete BEFORE DELETE ON operation_log
    BEGIN
        SELECT RAISE(ABORT, 'operation log is append-only');
    END;
    "#,
    // 8: idle session expiry (ACC-2): when each session was last used (existing sessions: at
    // their creation), and logout of all of an account's sessions; the TOTP second factor
    // (ACC-3): the secret and the last step accepted (replay protection).
    r#"
    ALTER TABLE sessions ADD COLUMN last_seen_at INTEGER NOT NULL DEFAULT 0;
    UPDATE sessions SET last_seen_at = created_at;
    CREATE INDEX sessions_account ON sessions(account_id);
    ALTER TABLE accounts ADD COLUMN totp_secret BLOB
        CHECK (totp_secret IS NULL OR (typeof(totp_secret) = 'blob' AND length(totp_secret) = 20));
    ALTER TABLE accounts ADD COLUMN totp_last_step INTEGER
        CHECK (totp_last_step IS NULL OR totp_last_step >= 0);
    "#,
    // 9: tenants (TEN-1..4): the channel tree (a channel's parent always exists before it, so
    // the tree has no cycles), the channel each enterprise belongs to, and the tenant of
    // channel and enterprise admin accounts.
    r#"
    CREATE TABLE channels (
        id                 INTEGER PRIMARY KEY,
        name               TEXT NOT NULL,
        parent_id          INTEGER REFERENCES channels(id),
        allow_sub_channels INTEGER NOT NULL,
        device_management  INTEGER NOT NULL,
        rps                INTEGER NOT NULL,
        contact            TEXT NOT NULL,
        email              TEXT NOT NULL,
        created_at         INTEGER NOT NULL
    );
    CREATE INDEX channels_parent ON channels(parent_id, id);
    ALTER TABLE enterprises ADD COLUMN channel_id INTEGER REFERENCES channels(id);
    CREATE INDEX enterprises_channel ON enterprises(channel_id, id);
    ALTER TABLE accounts ADD COLUMN channel_id INTEGER REFERENCES channels(id);
    ALTER TABLE accounts ADD COLUMN enterprise_id INTEGER REFERENCES enterprises(id);
    CREATE INDEX accounts_channel ON accounts(channel_id);
    CREATE INDEX accounts_enterprise ON accounts(enterprise_id);
    "#,
    // 10: frozen accounts (TEN-2): cannot log in; freezing deletes their sessions.
    r#"
    ALTER TABLE accounts ADD COLUMN frozen INTEGER NOT NULL DEFAULT 0 CHECK (frozen IN (0, 1));
    "#,
    // 11: first login forces a password change (ACC-2).
    r#"
    ALTER TABLE accounts ADD COLUMN must_change_password INTEGER NOT NULL DEFAULT 0
        CHECK (must_change_password IN (0, 1));
    "#,
    // 12: tenant profiles and search (TEN-1, TEN-2): the enterprise profile as JSON, the
    // channel's phone and country, the lower-cased text searches look in; the enterprise's
    // authorization of its channel and sessions acting inside a tenant (TEN-3); sub-accounts
    // with their permissions as JSON (TEN-5).
    r#"
    ALTER TABLE enterprises ADD COLUMN profile TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE enterprises ADD COLUMN search_text TEXT NOT NULL DEFAULT '';
    UPDATE enterprises SET search_text = lower(name);
    ALTER TABLE enterprises ADD COLUMN channel_authorization TEXT NOT NULL DEFAULT 'none'
        CHECK (channel_authorization IN ('none', 'pending', 'accepted', 'rejected'));
    ALTER TABLE channels ADD COLUMN phone TEXT NOT NULL DEFAULT '';
    ALTER TABLE channels ADD COLUMN country TEXT NOT NULL DEFAULT '';
    ALTER TABLE channels ADD COLUMN search_text TEXT NOT NULL DEFAULT '';
    UPDATE channels SET search_text = lower(name || char(10) || contact || char(10) || email);
    ALTER TABLE accounts ADD COLUMN parent_id INTEGER REFERENCES accounts(id);
    ALTER TABLE accounts ADD COLUMN permissions TEXT;
    CREATE INDEX accounts_parent ON accounts(parent_id);
    ALTER TABLE sessions ADD COLUMN acting_enterprise_id INTEGER REFERENCES enterprises(id);
    ALTER TABLE sessions ADD COLUMN acting_channel_id INTEGER REFERENCES channels(id);
    CREATE INDEX sessions_acting_enterprise ON sessions(acting_enterprise_id) WHERE acting_enterprise_id IS NOT NULL;
    "#,
    // 13: account self-service (ACC-3..5): settings (contact details, login protection), password
    // reset tokens and emailed login code challenges, each secret only as its SHA-256.
    r#"
    CREATE TABLE account_settings (
        account_id       INTEGER PRIMARY KEY REFERENCES accounts(id),
        contact_name     TEXT NOT NULL,
        phone            TEXT NOT NULL,
        country          TEXT NOT NULL,
        login_protection TEXT NOT NULL CHECK (login_protection IN ('none', 'email'))
    );
    CREATE TABLE password_resets (
        token_hash BLOB PRIMARY KEY CHECK (length(token_hash) = 32),
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        used_at    INTEGER
    ) WITHOUT ROWID;
    CREATE INDEX password_resets_account ON password_resets(account_id);
    CREATE INDEX password_resets_expires ON password_resets(expires_at);
    CREATE TABLE login_challenges (
        id_hash    BLOB PRIMARY KEY CHECK (length(id_hash) = 32),
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        code_hash  BLOB NOT NULL CHECK (length(code_hash) = 32),
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        attempts   INTEGER NOT NULL DEFAULT 0,
        used       INTEGER NOT NULL DEFAULT 0 CHECK (used IN (0, 1))
    ) WITHOUT ROWID;
    CREATE INDEX login_challenges_account ON login_challenges(account_id);
    CREATE INDEX login_challenges_expires ON login_challenges(expires_at);
    "#,
    // 14: device snapshot (DEV-1, DEV-3): the device's type (from its model, refreshed on open by
    // the catalog), its online flag and what its last status report said; one index per sort
    // column of the device list, each ending in the id (keyset pagination over (key, id)).
    // Missing IPs are '' and a device never reported has last_report_at 0, so that every sort
    // key is NOT NULL. (model, online) answers the dashboard's by-model counts and the common
    // "online + model" filter from the index alone; `search` (MAC, name, serial and model, lower
    // case, joined by U+001F) is what `q` looks in: its index is scanned instead of the table.
    r#"
    ALTER TABLE devices ADD COLUMN device_type TEXT NOT NULL DEFAULT 'other';
    ALTER TABLE devices ADD COLUMN online INTEGER NOT NULL DEFAULT 0 CHECK (online IN (0, 1));
    ALTER TABLE devices ADD COLUMN sip_status TEXT NOT NULL DEFAULT 'unknown';
    ALTER TABLE devices ADD COLUMN call_status TEXT;
    ALTER TABLE devices ADD COLUMN public_ip TEXT NOT NULL DEFAULT '';
    ALTER TABLE devices ADD COLUMN private_ip TEXT NOT NULL DEFAULT '';
    ALTER TABLE devices ADD COLUMN last_report_at INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE devices ADD COLUMN uptime_s INTEGER;
    ALTER TABLE devices ADD COLUMN last_reboot INTEGER;
    ALTER TABLE devices ADD COLUMN sip_lines TEXT NOT NULL DEFAULT '[]';
    CREATE INDEX devices_sort_mac ON devices(COALESCE(mac, ''), id);
    CREATE INDEX devices_sort_name ON devices(name, id);
    CREATE INDEX devices_sort_model ON devices(model, id);
    CREATE INDEX devices_sort_firmware ON devices(firmware, id);
    CREATE INDEX devices_sort_public_ip ON devices(public_ip, id);
    CREATE INDEX devices_sort_private_ip ON devices(private_ip, id);
    CREATE INDEX devices_sort_online ON devices(online, id);
    CREATE INDEX devices_sort_last_report ON devices(last_report_at, id);
    CREATE INDEX devices_sort_created ON devices(created_at, id);
    CREATE INDEX devices_type ON devices(device_type, online);
    CREATE INDEX devices_model_online ON devices(model, online);
    ALTER TABLE devices ADD COLUMN search TEXT GENERATED ALWAYS AS (
        lower(COALESCE(mac, '') || char(31) || name || char(31) || COALESCE(serial, '') || char(31) || model)
    ) VIRTUAL;
    CREATE INDEX devices_search ON devices(search);
    "#,
    // 15: saved device search labels (at most 50 per account, names unique per account) and the
    // chosen device list columns of each account (DEV-1).
    r#"
    CREATE TABLE device_labels (
        id         INTEGER PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        name       TEXT NOT NULL,
        filter     TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        UNIQUE (account_id, name)
    );
    CREATE TABLE device_columns (
        account_id INTEGER PRIMARY KEY REFERENCES accounts(id),
        columns    TEXT NOT NULL
    );
    "#,
    // 16: account search by contact name (TEN-2): the settings' contact name lower-cased (full
    // Unicode, by the store) for case-insensitive substring search.
    r#"
    ALTER TABLE account_settings ADD COLUMN contact_search TEXT NOT NULL DEFAULT '';
    UPDATE account_settings SET contact_search = lower(contact_name);
    "#,
    // 17: the durable per-device command queue (issue 11). Pages of a device's commands are read
    // newest first along `commands_device`; the partial indexes hold only pending commands (the
    // list is repeated verbatim by the queries, so that SQLite can use them): a device's queued
    // or sent ones in order (claim, requeue, its pending count), an enterprise's pending count,
    // and the deadlines the expiry walks. Small on purpose: a queued command is a short row and
    // four index entries (issue 11: at most 256 bytes of storage each).
    r#"
    CREATE TABLE commands (
        id            INTEGER PRIMARY KEY,
        device_id     INTEGER NOT NULL REFERENCES devices(id),
        enterprise_id INTEGER NOT NULL REFERENCES enterprises(id),
        kind          TEXT NOT NULL,
        args          TEXT NOT NULL,
        deadline      INTEGER NOT NULL,
        issued_by     INTEGER NOT NULL REFERENCES accounts(id),
        issued_at     INTEGER NOT NULL,
        state         TEXT NOT NULL CHECK (state IN
                          ('queued', 'sent', 'accepted', 'running', 'succeeded', 'failed', 'expired', 'cancelled')),
        attempts      INTEGER NOT NULL DEFAULT 0,
        sent_at       INTEGER,
        accepted_at   INTEGER,
        finished_at   INTEGER,
        output        TEXT,
        reason        TEXT
    );
    CREATE INDEX commands_device ON commands(device_id, id);
    CREATE INDEX commands_device_pending ON commands(device_id, state, id)
        WHERE state IN ('queued', 'sent', 'accepted', 'running');
    CREATE INDEX commands_enterprise_pending ON commands(enterprise_id)
        WHERE state IN ('queued', 'sent', 'accepted', 'running');
    CREATE INDEX commands_pending_deadline ON commands(deadline)
        WHERE state IN ('queued', 'sent', 'accepted', 'running');
    "#,
    // Files devices upload (issue 11). The content is a file `files/<id>` beside the database; a
    // row is `complete` only once that file is in place (see `embedded/files.rs` for the order of
    // writes and what opening the store sweeps after a crash). Pages of a device's files are read
    // newest first along `files_device`; the expiry walks `files_expiry`. AUTOINCREMENT: files are
    // deleted, and the id of a deleted file must never name another one (a download link).
    r#"
    CREATE TABLE files (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        device_id     INTEGER NOT NULL REFERENCES devices(id),
        enterprise_id INTEGER NOT NULL REFERENCES enterprises(id),
        command_id    INTEGER REFERENCES commands(id),
        name          TEXT NOT NULL,
        size          INTEGER NOT NULL CHECK (size >= 0),
        sha256        BLOB NOT NULL CHECK (length(sha256) = 32),
        created_at    INTEGER NOT NULL,
        expires_at    INTEGER NOT NULL,
        complete      INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX files_device ON files(device_id, id);
    CREATE INDEX files_expiry ON files(expires_at);
    "#,
    // Scheduled tasks (TSK-1, issue 11): tasks with their schedule and targets as JSON,
    // the due walk along a partial index of active tasks; runs unique per (task, occurrence) so
    // that an occurrence is claimed once; per-device results (command or refusal) of each run.
    // Runs and results go with their task (ON DELETE CASCADE) when finished tasks are pruned.
    r#"
    CREATE TABLE tasks (
        id            INTEGER PRIMARY KEY,
        enterprise_id INTEGER NOT NULL REFERENCES enterprises(id),
        name          TEXT NOT NULL,
        kind          TEXT NOT NULL,
        args          TEXT NOT NULL,
        deadline_s    INTEGER NOT NULL,
        targets       TEXT NOT NULL,
        schedule      TEXT NOT NULL,
        time_zone     TEXT NOT NULL,
        missed        TEXT NOT NULL CHECK (missed IN ('run_once', 'skip')),
        state         TEXT NOT NULL CHECK (state IN ('active', 'paused', 'cancelled', 'completed')),
        created_by    INTEGER NOT NULL REFERENCES accounts(id),
        created_at    INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL,
        next_run_at   INTEGER
    );
    CREATE INDEX tasks_enterprise ON tasks(enterprise_id, id);
    CREATE INDEX tasks_due ON tasks(next_run_at) WHERE state = 'active';
    CREATE TABLE task_runs (
        id            INTEGER PRIMARY KEY,
        task_id       INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
        scheduled_for INTEGER NOT NULL,
        claimed_at    INTEGER NOT NULL,
        state         TEXT NOT NULL CHECK (state IN ('pending', 'done', 'missed')),
        finished_at   INTEGER,
        matched       INTEGER NOT NULL DEFAULT 0,
        queued        INTEGER NOT NULL DEFAULT 0,
        refused       INTEGER NOT NULL DEFAULT 0,
        note          TEXT,
        UNIQUE (task_id, scheduled_for)
    );
    CREATE INDEX task_runs_task ON task_runs(task_id, id);
    CREATE INDEX task_runs_pending ON task_runs(id) WHERE state = 'pending';
    CREATE TABLE task_run_devices (
        run_id     INTEGER NOT NULL REFERENCES task_runs(id) ON DELETE CASCADE,
        device_id  INTEGER NOT NULL,
        command_id INTEGER,
        refusal    TEXT,
        PRIMARY KEY (run_id, device_id)
    ) WITHOUT ROWID;
    "#,
    // Device inventory (DEV-4, issue 12): per-device attributes (a JSON object, at most 32
    // keys) on the device row; import logs and their row errors (at most 10,000 per import,
    // one per line), deleted with their import. `device_id_high` holds the highest id ever
    // deleted: devices are inserted with an explicit id above it, because SQLite would give the
    // next device the id of a deleted last one, and events, delivery marks and alarm records of
    // the deleted device (kept until retention) must never be taken for the new one's. A device gains a site and groups later in
    // tables of their own (device → site column, device_groups(device, group, priority)).
    r#"
    ALTER TABLE devices ADD COLUMN attributes TEXT NOT NULL DEFAULT '{}';
    CREATE TABLE device_id_high (high INTEGER NOT NULL);
    INSERT INTO device_id_high (high) VALUES (0);
    CREATE TABLE device_imports (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        enterprise_id INTEGER NOT NULL REFERENCES enterprises(id),
        account_id    INTEGER NOT NULL REFERENCES accounts(id),
        mode          TEXT NOT NULL CHECK (mode IN ('create', 'overwrite', 'merge')),
        state         TEXT NOT NULL CHECK (state IN ('running', 'done', 'aborted')),
        started_at    INTEGER NOT NULL,
        finished_at   INTEGER,
        rows          INTEGER NOT NULL DEFAULT 0,
        created       INTEGER NOT NULL DEFAULT 0,
        updated       INTEGER NOT NULL DEFAULT 0,
        skipped       INTEGER NOT NULL DEFAULT 0,
        failed        INTEGER NOT NULL DEFAULT 0,
        errors_kept   INTEGER NOT NULL DEFAULT 0,
        note          TEXT
    );
    CREATE INDEX device_imports_enterprise ON device_imports(enterprise_id, id);
    CREATE TABLE device_import_errors (
        import_id INTEGER NOT NULL REFERENCES device_imports(id) ON DELETE CASCADE,
        line      INTEGER NOT NULL,
        col       TEXT NOT NULL,
        reason    TEXT NOT NULL,
        PRIMARY KEY (import_id, line)
    ) WITHOUT ROWID;
    "#,
    // Sites (PRV-1, issue 12): each enterprise's tree of sites, subnets as JSON (public subnets
    // with their private ones), names unique per enterprise, one Internet and one Intranet per
    // enterprise (created here for existing enterprises and by a trigger for new ones). A
    // device's site is a column without a foreign key: deleting a site clears it and re-matches
    // in the same transaction. The device index serves the dashboard's counts by site and the
    // list filter.
    r#"
    CREATE TABLE sites (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        enterprise_id INTEGER NOT NULL REFERENCES enterprises(id),
        parent_id     INTEGER REFERENCES sites(id),
        kind          TEXT NOT NULL CHECK (kind IN ('internet', 'intranet', 'custom')),
        name          TEXT NOT NULL,
        description   TEXT NOT NULL DEFAULT '',
        location      TEXT NOT NULL DEFAULT '',
        subnets       TEXT NOT NULL DEFAULT '[]',
        created_at    INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL,
        UNIQUE (enterprise_id, name)
    );
    CREATE UNIQUE INDEX sites_default ON sites(enterprise_id, kind) WHERE kind <> 'custom';
    CREATE INDEX sites_parent ON sites(parent_id);
    INSERT INTO sites (enterprise_id, kind, name, description, created_at, updated_at)
        SELECT id, 'internet', 'Internet', 'Devices outside the enterprise network', created_at, created_at FROM enterprises;
    INSERT INTO sites (enterprise_id, kind, name, description, created_at, updated_at)
        SELECT id, 'intranet', 'Intranet', 'Devices inside the enterprise network', created_at, created_at FROM enterprises;
    CREATE TRIGGER enterprises_default_sites AFTER INSERT ON enterprises BEGIN
        INSERT INTO sites (enterprise_id, kind, name, description, created_at, updated_at) VALUES
            (NEW.id, 'internet', 'Internet', 'Devices outside the enterprise network', NEW.created_at, NEW.created_at),
            (NEW.id, 'intranet', 'Intranet', 'Devices inside the enterprise network', NEW.created_at, NEW.created_at);
    END;
    ALTER TABLE devices ADD COLUMN site_id INTEGER;
    CREATE INDEX devices_site ON devices(enterprise_id, site_id, online);
    CREATE INDEX devices_site_id ON devices(site_id, id);
    "#,
    // Device groups (PRV-2, issue 12): groups per enterprise (name unique by its lower-case key),
    // memberships with a per-device order (`position`, lowest first: top priority), and the
    // default groups an auto-added device joins, in order. Ids are never reused (AUTOINCREMENT):
    // profiles deployed to a group refer to it by id. Memberships go with their device or group.
    r#"
    CREATE TABLE device_groups (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        enterprise_id INTEGER NOT NULL REFERENCES enterprises(id),
        name          TEXT NOT NULL,
        name_key      TEXT NOT NULL,
        description   TEXT NOT NULL DEFAULT '',
        created_at    INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL,
        UNIQUE (enterprise_id, name_key)
    );
    CREATE TABLE group_members (
        device_id INTEGER NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
        group_id  INTEGER NOT NULL REFERENCES device_groups(id) ON DELETE CASCADE,
        position  INTEGER NOT NULL,
        PRIMARY KEY (device_id, group_id)
    ) WITHOUT ROWID;
    CREATE INDEX group_members_group ON group_members(group_id, device_id);
    CREATE TABLE default_groups (
        enterprise_id INTEGER NOT NULL REFERENCES enterprises(id),
        group_id      INTEGER NOT NULL REFERENCES device_groups(id) ON DELETE CASCADE,
        position      INTEGER NOT NULL,
        PRIMARY KEY (enterprise_id, group_id)
    ) WITHOUT ROWID;
    CREATE INDEX default_groups_group ON default_groups(group_id);
    "#,
    // Configuration profiles (PRV-3, PRV-4, issue 12): profiles (settings as JSON, name unique
    // per enterprise), deployments as one row per (target, position) so that a deployed profile
    // cannot be deleted (the foreign key) and a deleted device takes its deployment with it, and
    // the per-device provisioning record (JSON: confirmed key hashes, the pending push, the last
    // result).
    r#"
    CREATE TABLE profiles (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        enterprise_id INTEGER NOT NULL REFERENCES enterprises(id),
        name          TEXT NOT NULL,
        settings      TEXT NOT NULL,
        created_at    INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL,
        UNIQUE (enterprise_id, name)
    );
    CREATE TABLE profile_deployments (
        enterprise_id INTEGER NOT NULL REFERENCES enterprises(id),
        container     TEXT NOT NULL CHECK (container IN ('device', 'site', 'model', 'group', 'global')),
        member        TEXT NOT NULL,
        device_id     INTEGER REFERENCES devices(id) ON DELETE CASCADE,
        position      INTEGER NOT NULL,
        profile_id    INTEGER NOT NULL REFERENCES profiles(id),
        updated_at    INTEGER NOT NULL,
        PRIMARY KEY (enterprise_id, container, member, position)
    ) WITHOUT ROWID;
    CREATE INDEX profile_deployments_profile ON profile_deployments(profile_id);
    CREATE INDEX profile_deployments_device ON profile_deployments(device_id) WHERE device_id IS NOT NULL;
    CREATE TABLE provision_records (
        device_id INTEGER PRIMARY KEY REFERENCES devices(id) ON DELETE CASCADE,
        record    TEXT NOT NULL
    );
    "#,
    // Firmware images (PRV-4, issue 12): one enterprise's images for a model, content in
    // `firmware/<id>` beside the database, written and swept like `files` (a row is `complete`
    // once its content is in place). AUTOINCREMENT: an image id is part of download links and
    // must never name another image after a deletion.
    r#"
    CREATE TABLE firmware_images (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        enterprise_id INTEGER NOT NULL REFERENCES enterprises(id),
        model         TEXT NOT NULL,
        version       TEXT NOT NULL,
        name          TEXT NOT NULL,
        size          INTEGER NOT NULL CHECK (size > 0),
        sha256        BLOB NOT NULL CHECK (length(sha256) = 32),
        uploaded_by   INTEGER NOT NULL REFERENCES accounts(id),
        uploaded_at   INTEGER NOT NULL,
        complete      INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX firmware_images_enterprise ON firmware_images(enterprise_id, id);
    "#,
    // Orders (ORD-1, ORD-2, issue 17): what was sold to an enterprise, its validity as instants
    // (local midnights in the enterprise's zone, computed by the API), cancelled only while
    // pending. AUTOINCREMENT: order ids appear in emails and statements and are never reused.
    // No foreign key on the accounts: an order outlives the account that placed it.
    r#"
    CREATE TABLE orders (
        id                INTEGER PRIMARY KEY AUTOINCREMENT,
        enterprise_id     INTEGER NOT NULL REFERENCES enterprises(id),
        seller_channel_id INTEGER REFERENCES channels(id),
        package           TEXT NOT NULL,
        max_devices       INTEGER NOT NULL CHECK (max_devices > 0),
        duration_months   INTEGER NOT NULL CHECK (duration_months > 0),
        effective_date    TEXT NOT NULL,
        starts_at         INTEGER NOT NULL,
        ends_at           INTEGER NOT NULL CHECK (ends_at > starts_at),
        amount            INTEGER NOT NULL CHECK (amount >= 0),
        created_by        INTEGER NOT NULL,
        created_at        INTEGER NOT NULL,
        cancelled_at      INTEGER,
        cancelled_by      INTEGER
    );
    CREATE INDEX orders_enterprise ON orders(enterprise_id, id);
    CREATE INDEX orders_created ON orders(created_at);
    "#,
    // Licences (ORD-3, issue 17): each device's status kept in its row; per enterprise the
    // allowance, how many devices it licenses now and the next instant an order starts or ends.
    // Triggers keep the rule (oldest `allowance` devices licensed) in the transaction that
    // registers, deletes or moves a device; `licences.rs` re-ranks on order changes.
    r#"
    ALTER TABLE devices ADD COLUMN licence TEXT NOT NULL DEFAULT 'unknown';
    CREATE INDEX devices_licence ON devices(enterprise_id, licence, id);
    CREATE TABLE enterprise_licences (
        enterprise_id INTEGER PRIMARY KEY REFERENCES enterprises(id),
        metered       INTEGER NOT NULL,
        allowance     INTEGER NOT NULL CHECK (allowance >= 0),
        licensed      INTEGER NOT NULL CHECK (licensed >= 0),
        valid_until   INTEGER NOT NULL
    );
    CREATE INDEX enterprise_licences_due ON enterprise_licences(valid_until);
    CREATE TRIGGER devices_licence_insert AFTER INSERT ON devices
    WHEN EXISTS (SELECT 1 FROM enterprise_licences WHERE enterprise_id = NEW.enterprise_id AND metered = 1)
    BEGIN
        UPDATE devices SET licence = CASE
            WHEN (SELECT licensed < allowance FROM enterprise_licences WHERE enterprise_id = NEW.enterprise_id)
            THEN 'licensed' ELSE 'unlicensed' END
        WHERE id = NEW.id;
        UPDATE enterprise_licences SET licensed = licensed + 1
        WHERE enterprise_id = NEW.enterprise_id AND licensed < allowance;
    END;
    CREATE TRIGGER devices_licence_delete AFTER DELETE ON devices WHEN OLD.licence = 'licensed'
    BEGIN
        UPDATE enterprise_licences SET licensed = licensed - 1 WHERE enterprise_id = OLD.enterprise_id
            AND NOT EXISTS (SELECT 1 FROM devices WHERE enterprise_id = OLD.enterprise_id AND licence = 'unlicensed');
        UPDATE devices SET licence = 'licensed' WHERE id =
            (SELECT min(id) FROM devices WHERE enterprise_id = OLD.enterprise_id AND licence = 'unlicensed');
    END;
    CREATE TRIGGER devices_licence_move AFTER UPDATE OF enterprise_id ON devices
    WHEN OLD.enterprise_id <> NEW.enterprise_id
    BEGIN
        UPDATE enterprise_licences SET licensed = licensed - 1 WHERE OLD.licence = 'licensed'
            AND enterprise_id = OLD.enterprise_id
            AND NOT EXISTS (SELECT 1 FROM devices WHERE enterprise_id = OLD.enterprise_id AND licence = 'unlicensed');
        UPDATE devices SET licence = 'licensed' WHERE OLD.licence = 'licensed' AND id =
            (SELECT min(id) FROM devices WHERE enterprise_id = OLD.enterprise_id AND licence = 'unlicensed');
        UPDATE devices SET licence = CASE
            WHEN NOT EXISTS (SELECT 1 FROM enterprise_licences WHERE enterprise_id = NEW.enterprise_id AND metered = 1)
            THEN 'unknown'
            WHEN id IN (SELECT id FROM devices WHERE enterprise_id = NEW.enterprise_id ORDER BY id
                LIMIT coalesce((SELECT allowance FROM enterprise_licences WHERE enterprise_id = NEW.enterprise_id), 0))
            THEN 'licensed' ELSE 'unlicensed' END
        WHERE enterprise_id = NEW.enterprise_id;
        UPDATE enterprise_licences SET licensed =
            (SELECT count(*) FROM devices WHERE enterprise_id = NEW.enterprise_id AND licence = 'licensed')
        WHERE enterprise_id = NEW.enterprise_id;
    END;
    "#,
    // One enterprise's devices in the list's default order (issue 12): an enterprise admin's
    // list and the export walk this index from the cursor on instead of sorting every device
    // of the enterprise for each page (`device_sql.rs` binds a single enterprise with `=`).
    r#"
    CREATE INDEX devices_enterprise_created ON devices(enterprise_id, created_at, id);
    "#,
    // Maintenance windows (issue 18): settings as one JSON document, as strategies; the mark a
    // window left on an alarm activation, one row per activation (the latest step).
    r#"
    CREATE TABLE maintenance_windows (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        enterprise_id INTEGER NOT NULL REFERENCES enterprises(id),
        settings      TEXT NOT NULL,
        created_at    INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL
    );
    CREATE INDEX maintenance_windows_enterprise ON maintenance_windows(enterprise_id, id);
    CREATE TABLE alarm_window_marks (
        device_id     INTEGER NOT NULL,
        code          INTEGER NOT NULL,
        first_at      INTEGER NOT NULL,
        enterprise_id INTEGER NOT NULL,
        window_id     INTEGER NOT NULL,
        window_name   TEXT NOT NULL,
        state         TEXT NOT NULL,
        at            INTEGER NOT NULL,
        until         INTEGER,
        PRIMARY KEY (device_id, code, first_at)
    ) WITHOUT ROWID;
    CREATE INDEX alarm_window_marks_at ON alarm_window_marks(at);
    "#,
    // The notification audit (issue 18): alarm entries name their activation, message entries
    // (device_id NULL) the outbox message's key; and what the retention pass deletes by: the
    // settled outbox by age, item keys by message.
    r#"
    CREATE TABLE notification_audit (
        id            INTEGER PRIMARY KEY,
        enterprise_id INTEGER,
        device_id     INTEGER,
        code          INTEGER,
        first_at      INTEGER,
        at            INTEGER NOT NULL,
        event         TEXT NOT NULL,
        receiver      TEXT,
        message_key   TEXT,
        detail        TEXT NOT NULL
    );
    CREATE INDEX notification_audit_alarm ON notification_audit(device_id, code, first_at)
        WHERE device_id IS NOT NULL;
    CREATE INDEX notification_audit_message ON notification_audit(message_key) WHERE device_id IS NULL;
    CREATE INDEX notification_audit_at ON notification_audit(at);
    CREATE INDEX outbox_settled ON outbox(state, created_at);
    CREATE INDEX outbox_items_message ON outbox_items(message_id);
    "#,
    // Strategies down the tenant tree (issue 18): a strategy belongs to an enterprise or to a
    // channel (one id space); a channel's says how far it reaches and what enterprises may do
    // (JSON); enterprises' choices about inherited strategies. SQLite cannot drop a NOT NULL, so
    // the table is rebuilt (nothing references it yet).
    r#"
    CREATE TABLE alarm_strategies_new (
        id            INTEGER PRIMARY KEY,
        enterprise_id INTEGER REFERENCES enterprises(id),
        channel_id    INTEGER REFERENCES channels(id),
        inheritance   TEXT,
        settings      TEXT NOT NULL,
        created_at    INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL,
        CHECK ((enterprise_id IS NULL) <> (channel_id IS NULL)),
        CHECK ((channel_id IS NULL) = (inheritance IS NULL))
    );
    INSERT INTO alarm_strategies_new (id, enterprise_id, settings, created_at, updated_at)
        SELECT id, enterprise_id, settings, created_at, updated_at FROM alarm_strategies;
    DROP TABLE alarm_strategies;
    ALTER TABLE alarm_strategies_new RENAME TO alarm_strategies;
    CREATE INDEX alarm_strategies_enterprise ON alarm_strategies(enterprise_id, id);
    CREATE INDEX alarm_strategies_channel ON alarm_strategies(channel_id, id);
    CREATE TABLE alarm_strategy_choices (
        enterprise_id  INTEGER NOT NULL REFERENCES enterprises(id),
        strategy_id    INTEGER NOT NULL REFERENCES alarm_strategies(id) ON DELETE CASCADE,
        replacement_id INTEGER REFERENCES alarm_strategies(id) ON DELETE CASCADE,
        at             INTEGER NOT NULL,
        PRIMARY KEY (enterprise_id, strategy_id)
    );
    CREATE INDEX alarm_strategy_choices_strategy ON alarm_strategy_choices(strategy_id);
    CREATE INDEX alarm_strategy_choices_replacement ON alarm_strategy_choices(replacement_id);
    "#,
    // The alarm engine's saved state (issue 18 item 6): one JSON document.
    r#"
    CREATE TABLE alarm_engine_state (
        id       INTEGER PRIMARY KEY CHECK (id = 1),
        state    TEXT NOT NULL,
        saved_at INTEGER NOT NULL
    );
    "#,
    // Tenancy (TEN-1, TEN-5, DEV-1, issue 17): a tenant freeze and the accounts it froze
    // (`frozen_by`, so that unfreezing restores exactly those), deleted sub-accounts kept as
    // tombstones (`deleted_at`), the RPS device list (one row per device key, unique across
    // enterprises). Enterprises created before the device-management flag took effect had it
    // off without meaning it (the API's default was off and it controlled nothing): it is turned
    // on for them, so an upgrade takes no device action away.
    r#"
    ALTER TABLE accounts ADD COLUMN frozen_by TEXT;
    ALTER TABLE accounts ADD COLUMN deleted_at INTEGER;
    CREATE INDEX accounts_frozen_by ON accounts(frozen_by) WHERE frozen_by IS NOT NULL;
    CREATE TABLE tenant_freezes (
        kind       TEXT NOT NULL CHECK (kind IN ('channel', 'enterprise')),
        tenant_id  INTEGER NOT NULL,
        frozen_at  INTEGER NOT NULL,
        frozen_by  INTEGER NOT NULL,
        accounts   INTEGER NOT NULL CHECK (accounts >= 0),
        PRIMARY KEY (kind, tenant_id)
    ) WITHOUT ROWID;
    UPDATE enterprises SET profile = json_set(profile, '$.device_management', json('true'));
    CREATE TABLE rps_devices (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        enterprise_id INTEGER NOT NULL REFERENCES enterprises(id),
        device_key    TEXT NOT NULL UNIQUE,
        server_url    TEXT NOT NULL,
        created_at    INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL
    );
    CREATE INDEX rps_devices_enterprise ON rps_devices(enterprise_id, id);
    "#,
    // Site incidents (issue 18 item 3): one row per incident, named by its natural key, and one
    // per member alarm activation (found again by the activation for "part of incident X").
    r#"
    CREATE TABLE alarm_incidents (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        enterprise_id INTEGER NOT NULL,
        strategy_id   INTEGER NOT NULL,
        site_id       INTEGER NOT NULL,
        site_name     TEXT NOT NULL,
        code          INTEGER NOT NULL,
        opened_at     INTEGER NOT NULL,
        updated_at    INTEGER NOT NULL,
        resolved_at   INTEGER,
        site_devices  INTEGER NOT NULL,
        affected      INTEGER NOT NULL,
        back          INTEGER NOT NULL,
        UNIQUE (enterprise_id, strategy_id, site_id, code, opened_at)
    );
    CREATE INDEX alarm_incidents_enterprise ON alarm_incidents(enterprise_id, id);
    CREATE TABLE alarm_incident_members (
        incident_id INTEGER NOT NULL REFERENCES alarm_incidents(id) ON DELETE CASCADE,
        device_id   INTEGER NOT NULL,
        code        INTEGER NOT NULL,
        first_at    INTEGER NOT NULL,
        back        INTEGER NOT NULL,
        PRIMARY KEY (incident_id, device_id)
    ) WITHOUT ROWID;
    CREATE INDEX alarm_incident_members_activation ON alarm_incident_members(device_id, code, first_at);
    "#,
    // Dead letters (issue 18 item 5): events given up after their retries, at most 10,000
    // (the oldest deleted first).
    r#"
    CREATE TABLE dead_letters (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        stage         TEXT NOT NULL,
        reason        TEXT NOT NULL,
        detail        TEXT NOT NULL,
        enterprise_id INTEGER,
        device_id     INTEGER,
        payload       TEXT NOT NULL,
        attempts      INTEGER NOT NULL CHECK (attempts >= 0),
        at            INTEGER NOT NULL
    );
    CREATE INDEX dead_letters_stage ON dead_letters(stage, id);
    "#,
    // The alarm engine's saved state per owner (issue 16: each node of several saves its own
    // engine's; '' is the one engine of a single node, which keeps the document saved so far).
    r#"
    CREATE TABLE alarm_engine_state_by_owner (
        owner    TEXT PRIMARY KEY,
        state    TEXT NOT NULL,
        saved_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO alarm_engine_state_by_owner (owner, state, saved_at)
        SELECT '', state, saved_at FROM alarm_engine_state;
    DROP TABLE alarm_engine_state;
    ALTER TABLE alarm_engine_state_by_owner RENAME TO alarm_engine_state;
    "#,
    // Relay grants (ING-9, issue 15): the credentials relays authenticate with, as SHA-256,
    // scoped to one enterprise or one channel (its subtree).
    r#"
    CREATE TABLE relays (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        name            TEXT NOT NULL,
        scope_kind      TEXT NOT NULL CHECK (scope_kind IN ('channel', 'enterprise')),
        scope_id        INTEGER NOT NULL,
        credential_hash BLOB NOT NULL UNIQUE,
        created_by      INTEGER NOT NULL,
        created_at      INTEGER NOT NULL,
        rotated_at      INTEGER,
        revoked_at      INTEGER,
        last_seen_at    INTEGER
    );
    "#,
    // One index over a device's events of every kind (issue 14). Each of the three event tables
    // kept its own `(device_id, seq)` index, so a commit holding a device's flush wrote a leaf of
    // each: three index pages per device per commit. `device_events` holds the same entries in one
    // tree, so the device's flush lands in one leaf. `kind` is 0 for a status event, 1 for a
    // resource report and 2 for an alarm event; `row` is the `id` in that kind's table.
    //
    // The event tables are rebuilt with an explicit `id INTEGER PRIMARY KEY` (their rowid as it
    // was): an implicit rowid may change on VACUUM, and `row` must not. The writer's append adds
    // each new event's entry in the same statement sequence (a trigger costs a commit 11 % more);
    // delete triggers take the entries of deleted events out, retention's included. The alarm log,
    // the one read by device and code, gets a partial index of its own over the few alarms that
    // carry a log.
    r#"
    CREATE TABLE status_events_by_id (
        id            INTEGER PRIMARY KEY,
        device_id     INTEGER NOT NULL,
        enterprise_id INTEGER NOT NULL,
        seq           INTEGER NOT NULL,
        at            INTEGER NOT NULL,
        sip_summary   TEXT NOT NULL,
        call_status   TEXT NOT NULL,
        firmware      TEXT NOT NULL,
        public_ip     TEXT,
        private_ip    TEXT,
        uptime_s      INTEGER NOT NULL,
        last_reboot   INTEGER,
        lines         TEXT NOT NULL
    );
    INSERT INTO status_events_by_id
        SELECT rowid, device_id, enterprise_id, seq, at, sip_summary, call_status, firmware, public_ip,
               private_ip, uptime_s, last_reboot, lines FROM status_events ORDER BY rowid;
    DROP TABLE status_events;
    ALTER TABLE status_events_by_id RENAME TO status_events;
    CREATE TABLE resource_reports_by_id (
        id            INTEGER PRIMARY KEY,
        device_id     INTEGER NOT NULL,
        enterprise_id INTEGER NOT NULL,
        seq           INTEGER NOT NULL,
        at            INTEGER NOT NULL,
        cpu_centi_pct INTEGER NOT NULL,
        mem_used      INTEGER NOT NULL,
        mem_total     INTEGER NOT NULL
    );
    INSERT INTO resource_reports_by_id
        SELECT rowid, device_id, enterprise_id, seq, at, cpu_centi_pct, mem_used, mem_total
        FROM resource_reports ORDER BY rowid;
    DROP TABLE resource_reports;
    ALTER TABLE resource_reports_by_id RENAME TO resource_reports;
    CREATE TABLE alarm_events_by_id (
        id            INTEGER PRIMARY KEY,
        device_id     INTEGER NOT NULL,
        enterprise_id INTEGER NOT NULL,
        seq           INTEGER NOT NULL,
        at            INTEGER NOT NULL,
        code          INTEGER NOT NULL,
        clear         INTEGER NOT NULL,
        description   TEXT NOT NULL,
        log           BLOB
    );
    INSERT INTO alarm_events_by_id
        SELECT rowid, device_id, enterprise_id, seq, at, code, clear, description, log
        FROM alarm_events ORDER BY rowid;
    DROP TABLE alarm_events;
    ALTER TABLE alarm_events_by_id RENAME TO alarm_events;
    CREATE INDEX alarm_events_log ON alarm_events(device_id, code, at) WHERE log IS NOT NULL;

    CREATE TABLE device_events (
        device_id INTEGER NOT NULL,
        seq       INTEGER NOT NULL,
        kind      INTEGER NOT NULL,
        row       INTEGER NOT NULL,
        PRIMARY KEY (device_id, seq, kind, row)
    ) WITHOUT ROWID;
    INSERT INTO device_events (device_id, seq, kind, row)
        SELECT device_id, seq, 0, id FROM status_events
        UNION ALL SELECT device_id, seq, 1, id FROM resource_reports
        UNION ALL SELECT device_id, seq, 2, id FROM alarm_events;
    CREATE TRIGGER status_events_unindexed AFTER DELETE ON status_events BEGIN
        DELETE FROM device_events WHERE device_id = OLD.device_id AND seq = OLD.seq AND kind = 0 AND row = OLD.id;
    END;
    CREATE TRIGGER resource_reports_unindexed AFTER DELETE ON resource_reports BEGIN
        DELETE FROM device_events WHERE device_id = OLD.device_id AND seq = OLD.seq AND kind = 1 AND row = OLD.id;
    END;
    CREATE TRIGGER alarm_events_unindexed AFTER DELETE ON alarm_events BEGIN
        DELETE FROM device_events WHERE device_id = OLD.device_id AND seq = OLD.seq AND kind = 2 AND row = OLD.id;
    END;
    "#,
];

/// The schema version this build writes.
pub const CURRENT_VERSION: u32 = MIGRATIONS.len() as u32;

/// Applies the migrations above the database's version, each in its own transaction.
pub fn migrate(conn: &mut Connection) -> Result<u32> {
    let current: u32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| StoreError::Migration { version: 0, reason: e.to_string() })?;
    if current > CURRENT_VERSION {
        return Err(StoreError::Migration {
            version: current,
            reason: format!("the database is newer than this build (schema {CURRENT_VERSION})"),
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = i as u32 + 1;
        let fail = |e: rusqlite::Error| StoreError::Migration { version, reason: e.to_string() };
        let tx = conn.transaction().map_err(fail)?;
        tx.execute_batch(sql).map_err(fail)?;
        tx.pragma_update(None, "user_version", version).map_err(fail)?;
        tx.commit().map_err(fail)?;
        tracing::info!(message = "Applied schema migration.", version);
    }
    Ok(CURRENT_VERSION)
}

#[cfg(test)]
mod tests;
