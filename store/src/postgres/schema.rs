//! Versioned schema migrations of the PostgreSQL entity store, applied on connect.
//!
//! The migrations are SQL strings compiled into the binary and run by sqlx's migrator, which
//! records them in `_sqlx_migrations` (with a checksum) under an advisory lock, so that several
//! processes connecting at once migrate once. Migrations are append-only: never edit one that
//! has shipped (its checksum would no longer match); add the next.

use std::borrow::Cow;

use sqlx::SqlSafeStr;
use sqlx::migrate::{MigrateError, Migration, MigrationType, Migrator};
use sqlx::postgres::PgConnection;

use crate::{Result, StoreError};

/// Every migration, in order: (description, SQL); the version of `MIGRATIONS[i]` is `i + 1`.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "entities",
        // 1: the portal entities, as in the embedded schema. Ids are identities (never reused),
        // times are unix milliseconds, token hashes are SHA-256 digests.
        r#"
    CREATE TABLE accounts (
        id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        email         TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        role          TEXT NOT NULL,
        created_at    BIGINT NOT NULL
    );
    CREATE UNIQUE INDEX accounts_email_lower ON accounts (lower(email));

    CREATE TABLE sessions (
        token_hash BYTEA PRIMARY KEY,
        account_id BIGINT NOT NULL REFERENCES accounts (id),
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL
    );
    CREATE INDEX sessions_expires ON sessions (expires_at);

    CREATE TABLE enterprises (
        id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name       TEXT NOT NULL,
        credential TEXT NOT NULL UNIQUE,
        created_at BIGINT NOT NULL
    );

    CREATE TABLE devices (
        id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        enterprise_id BIGINT NOT NULL REFERENCES enterprises (id),
        mac           TEXT UNIQUE,
        serial        TEXT,
        model         TEXT NOT NULL,
        firmware      TEXT NOT NULL,
        name          TEXT NOT NULL DEFAULT '',
        created_at    BIGINT NOT NULL
    );
    CREATE UNIQUE INDEX devices_serial_without_mac ON devices (serial) WHERE mac IS NULL;
    CREATE INDEX devices_enterprise ON devices (enterprise_id, id);
    "#,
    ),
    (
        "alarm strategies",
        // 2: alarm strategies (ALM-3); the settings are one JSON document, as in the embedded store.
        r#"
    CREATE TABLE alarm_strategies (
        id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        enterprise_id BIGINT NOT NULL REFERENCES enterprises (id),
        settings      TEXT NOT NULL,
        created_at    BIGINT NOT NULL,
        updated_at    BIGINT NOT NULL
    );
    CREATE INDEX alarm_strategies_enterprise ON alarm_strategies (enterprise_id, id);
    "#,
    ),
    (
        "notification outbox",
        // 3: the durable notification outbox (ALM-5): one row per idempotency key.
        r#"
    CREATE TABLE outbox (
        id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        key             TEXT NOT NULL UNIQUE,
        enterprise_id   BIGINT NOT NULL,
        receiver        TEXT NOT NULL,
        payload         TEXT NOT NULL,
        state           TEXT NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at BIGINT NOT NULL,
        last_error      TEXT,
        created_at      BIGINT NOT NULL,
        sent_at         BIGINT
    );
    CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
    "#,
    ),
    (
        "outbox item keys",
        // 4: the idempotency keys of the alarm items queued messages carry (exactly-once
        // notification items across restarts): one row per item key, naming the message.
        r#"
    CREATE TABLE outbox_items (
        item_key   TEXT PRIMARY KEY,
        message_id BIGINT NOT NULL
    );
    "#,
    ),
    (
        "login protection",
        // 5: login protection (ACC-2): wrong passwords since the last success or lock, and the lock.
        r#"
    ALTER TABLE accounts ADD COLUMN failed_logins INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE accounts ADD COLUMN locked_until BIGINT;
    "#,
    ),
    (
        "operation log",
        // 6: the operation log (LOG-1), append-only: statement triggers refuse every UPDATE,
        // DELETE and TRUNCATE, whoever issues them (even when no row matches). Pages are read
        // newest first by id; the indexes serve the filters by account, enterprise, operation
        // type and time.
        r#"
    CREATE TABLE operation_log (
        id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        account_id    BIGINT,
        account_email TEXT NOT NULL,
        acting_as     BIGINT,
        operation     TEXT NOT NULL,
        method        TEXT NOT NULL,
        path          TEXT NOT NULL,
        ip            TEXT NOT NULL,
        at            BIGINT NOT NULL,
        status        INTEGER NOT NULL,
        outcome       TEXT NOT NULL
    );
    CREATE INDEX operation_log_account ON operation_log (account_id, id);
    CREATE INDEX operation_log_acting_as ON operation_log (acting_as, id);
    CREATE INDEX operation_log_operation ON operation_log (operation, id);
    CREATE INDEX operation_log_at ON operation_log (at);

    CREATE FUNCTION operation_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'operation log is append-only' USING ERRCODE = 'insufficient_privilege';
    END;
    $$;
    CREATE TRIGGER operation_log_no_change BEFORE UPDATE OR DELETE ON operation_log
        FOR EACH STATEMENT EXECUTE FUNCTION operation_log_append_only();
    CREATE TRIGGER operation_log_no_truncate BEFORE TRUNCATE ON operation_log
        FOR EACH STATEMENT EXECUTE FUNCTION operation_log_append_only();
    "#,
    ),
    (
        "session activity and totp",
        // 7: idle session expiry (ACC-2): when each session was last used (existing sessions: at
        // their creation), and logout of all of an account's sessions; the TOTP second factor
        // (ACC-3): the secret and the last step accepted (replay protection).
        r#"
    ALTER TABLE sessions ADD COLUMN last_seen_at BIGINT;
    UPDATE sessions SET last_seen_at = created_at;
    ALTER TABLE sessions ALTER COLUMN last_seen_at SET NOT NULL;
    CREATE INDEX sessions_account ON sessions (account_id);
    ALTER TABLE accounts ADD COLUMN totp_secret BYTEA
        CHECK (totp_secret IS NULL OR octet_length(totp_secret) = 20);
    ALTER TABLE accounts ADD COLUMN totp_last_step BIGINT
        CHECK (totp_last_step IS NULL OR totp_last_step >= 0);
    "#,
    ),
    (
        "tenants",
        // 8: tenants (TEN-1..4): the channel tree (a channel's parent always exists before it,
        // so its id is smaller and the tree has no cycles), the channel each enterprise belongs
        // to, and the tenant of channel and enterprise admin accounts.
        r#"
    CREATE TABLE channels (
        id                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        name               TEXT NOT NULL,
        parent_id          BIGINT REFERENCES channels (id),
        allow_sub_channels BOOLEAN NOT NULL,
        device_management  BOOLEAN NOT NULL,
        rps                BOOLEAN NOT NULL,
        contact            TEXT NOT NULL,
        email              TEXT NOT NULL,
        created_at         BIGINT NOT NULL,
        CHECK (parent_id IS NULL OR parent_id < id)
    );
    CREATE INDEX channels_parent ON channels (parent_id, id);
    ALTER TABLE enterprises ADD COLUMN channel_id BIGINT REFERENCES channels (id);
    CREATE INDEX enterprises_channel ON enterprises (channel_id, id);
    ALTER TABLE accounts ADD COLUMN channel_id BIGINT REFERENCES channels (id);
    ALTER TABLE accounts ADD COLUMN enterprise_id BIGINT REFERENCES enterprises (id);
    CREATE INDEX accounts_channel ON accounts (channel_id);
    CREATE INDEX accounts_enterprise ON accounts (enterprise_id);
    "#,
    ),
    (
        "frozen accounts",
        // 9: frozen accounts (TEN-2): cannot log in; freezing deletes their sessions.
        r#"
    ALTER TABLE accounts ADD COLUMN frozen BOOLEAN NOT NULL DEFAULT false;
    "#,
    ),
    (
        "forced password change",
        // 10: first login forces a password change (ACC-2).
        r#"
    ALTER TABLE accounts ADD COLUMN must_change_password BOOLEAN NOT NULL DEFAULT false;
    "#,
    ),
    (
        "tenant profiles, authorization, sub-accounts",
        // 11: tenant profiles and search (TEN-1, TEN-2): the enterprise profile as JSON text, the
        // channel's phone and country, the lower-cased text searches look in; the enterprise's
        // authorization of its channel and sessions acting inside a tenant (TEN-3); sub-accounts
        // with their permissions as JSON text (TEN-5).
        r#"
    ALTER TABLE enterprises ADD COLUMN profile TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE enterprises ADD COLUMN search_text TEXT NOT NULL DEFAULT '';
    UPDATE enterprises SET search_text = lower(name);
    ALTER TABLE enterprises ADD COLUMN channel_authorization TEXT NOT NULL DEFAULT 'none'
        CHECK (channel_authorization IN ('none', 'pending', 'accepted', 'rejected'));
    ALTER TABLE channels ADD COLUMN phone TEXT NOT NULL DEFAULT '';
    ALTER TABLE channels ADD COLUMN country TEXT NOT NULL DEFAULT '';
    ALTER TABLE channels ADD COLUMN search_text TEXT NOT NULL DEFAULT '';
    UPDATE channels SET search_text = lower(name || chr(10) || contact || chr(10) || email);
    ALTER TABLE accounts ADD COLUMN parent_id BIGINT REFERENCES accounts (id);
    ALTER TABLE accounts ADD COLUMN permissions TEXT;
    CREATE INDEX accounts_parent ON accounts (parent_id);
    ALTER TABLE sessions ADD COLUMN acting_enterprise_id BIGINT REFERENCES enterprises (id);
    ALTER TABLE sessions ADD COLUMN acting_channel_id BIGINT REFERENCES channels (id);
    CREATE INDEX sessions_acting_enterprise ON sessions (acting_enterprise_id) WHERE acting_enterprise_id IS NOT NULL;
    "#,
    ),
    (
        "account self-service",
        // 12: account self-service (ACC-3..5): settings (contact details, login protection),
        // password reset tokens and emailed login code challenges, each secret only as its
        // SHA-256.
        r#"
    CREATE TABLE account_settings (
        account_id       BIGINT PRIMARY KEY REFERENCES accounts (id),
        contact_name     TEXT NOT NULL,
        phone            TEXT NOT NULL,
        country          TEXT NOT NULL,
        login_protection TEXT NOT NULL CHECK (login_protection IN ('none', 'email'))
    );
    CREATE TABLE password_resets (
        token_hash BYTEA PRIMARY KEY CHECK (length(token_hash) = 32),
        account_id BIGINT NOT NULL REFERENCES accounts (id),
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        used_at    BIGINT
    );
    CREATE INDEX password_resets_account ON password_resets (account_id);
    CREATE INDEX password_resets_expires ON password_resets (expires_at);
    CREATE TABLE login_challenges (
        id_hash    BYTEA PRIMARY KEY CHECK (length(id_hash) = 32),
        account_id BIGINT NOT NULL REFERENCES accounts (id),
        code_hash  BYTEA NOT NULL CHECK (length(code_hash) = 32),
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        attempts   INTEGER NOT NULL DEFAULT 0,
        used       BOOLEAN NOT NULL DEFAULT false
    );
    CREATE INDEX login_challenges_account ON login_challenges (account_id);
    CREATE INDEX login_challenges_expires ON login_challenges (expires_at);
    "#,
    ),
    (
        "device snapshot",
        // 13: device snapshot (DEV-1, DEV-3), as in the embedded schema: the type (refreshed on
        // connect from the catalog), the online flag (0/1, a number so that it sorts and pages
        // like SQLite's) and the last status report. One index per sort column ending in the id;
        // text keys sort by bytes (COLLATE "C"), as in SQLite, whatever the database's locale.
        // (model, online) and the stored `search` column as in the embedded schema.
        r#"
    ALTER TABLE devices ADD COLUMN device_type TEXT NOT NULL DEFAULT 'other';
    ALTER TABLE devices ADD COLUMN online SMALLINT NOT NULL DEFAULT 0 CHECK (online IN (0, 1));
    ALTER TABLE devices ADD COLUMN sip_status TEXT NOT NULL DEFAULT 'unknown';
    ALTER TABLE devices ADD COLUMN call_status TEXT;
    ALTER TABLE devices ADD COLUMN public_ip TEXT NOT NULL DEFAULT '';
    ALTER TABLE devices ADD COLUMN private_ip TEXT NOT NULL DEFAULT '';
    ALTER TABLE devices ADD COLUMN last_report_at BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE devices ADD COLUMN uptime_s BIGINT;
    ALTER TABLE devices ADD COLUMN last_reboot BIGINT;
    ALTER TABLE devices ADD COLUMN sip_lines TEXT NOT NULL DEFAULT '[]';
    CREATE INDEX devices_sort_mac ON devices ((COALESCE(mac, '') COLLATE "C"), id);
    CREATE INDEX devices_sort_name ON devices ((name COLLATE "C"), id);
    CREATE INDEX devices_sort_model ON devices ((model COLLATE "C"), id);
    CREATE INDEX devices_sort_firmware ON devices ((firmware COLLATE "C"), id);
    CREATE INDEX devices_sort_public_ip ON devices ((public_ip COLLATE "C"), id);
    CREATE INDEX devices_sort_private_ip ON devices ((private_ip COLLATE "C"), id);
    CREATE INDEX devices_sort_online ON devices (online, id);
    CREATE INDEX devices_sort_last_report ON devices (last_report_at, id);
    CREATE INDEX devices_sort_created ON devices (created_at, id);
    CREATE INDEX devices_type ON devices (device_type, online);
    CREATE INDEX devices_model_online ON devices (model, online);
    ALTER TABLE devices ADD COLUMN search TEXT GENERATED ALWAYS AS (
        lower(COALESCE(mac, '') || chr(31) || name || chr(31) || COALESCE(serial, '') || chr(31) || model)
    ) STORED;
    "#,
    ),
    (
        "device labels and columns",
        // 14: saved device search labels (at most 50 per account, names unique per account) and the
        // chosen device list columns of each account (DEV-1), as in the embedded schema.
        r#"
    CREATE TABLE device_labels (
        id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        account_id BIGINT NOT NULL REFERENCES accounts (id),
        name       TEXT NOT NULL,
        filter     TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        UNIQUE (account_id, name)
    );
    CREATE TABLE device_columns (
        account_id BIGINT PRIMARY KEY REFERENCES accounts (id),
        columns    TEXT NOT NULL
    );
    "#,
    ),
    (
        "device search trigram index",
        // 15: `q` of the device list as a trigram index lookup (pg_trgm, a trusted extension
        // since PostgreSQL 13, shipped with Debian's server) instead of a scan of every device.
        // Where the extension cannot be created the migration still succeeds and the search
        // scans, as before.
        r#"
    DO $$
    BEGIN
        CREATE EXTENSION IF NOT EXISTS pg_trgm;
    EXCEPTION WHEN OTHERS THEN
        RAISE NOTICE 'pg_trgm is not available (%): device search scans the devices', SQLERRM;
    END $$;
    DO $$
    BEGIN
        IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
            EXECUTE 'CREATE INDEX devices_search_trgm ON devices USING gin (search gin_trgm_ops)';
        END IF;
    END $$;
    "#,
    ),
    (
        "account contact search",
        // 16: account search by contact name (TEN-2): the settings' contact name lower-cased
        // (full Unicode, by the store) for case-insensitive substring search.
        r#"
    ALTER TABLE account_settings ADD COLUMN contact_search TEXT NOT NULL DEFAULT '';
    UPDATE account_settings SET contact_search = lower(contact_name);
    "#,
    ),
    (
        "command queue",
        // 17: the durable per-device command queue (issue 11), as in the embedded schema: a
        // device's commands newest first, and partial indexes over pending commands only (a
        // device's in order, an enterprise's count, the deadlines the expiry walks).
        r#"
    CREATE TABLE commands (
        id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        device_id     BIGINT NOT NULL REFERENCES devices (id),
        enterprise_id BIGINT NOT NULL REFERENCES enterprises (id),
        kind          TEXT NOT NULL,
        args          TEXT NOT NULL,
        deadline      BIGINT NOT NULL,
        issued_by     BIGINT NOT NULL REFERENCES accounts (id),
        issued_at     BIGINT NOT NULL,
        state         TEXT NOT NULL CHECK (state IN
                          ('queued', 'sent', 'accepted', 'running', 'succeeded', 'failed', 'expired', 'cancelled')),
        attempts      INTEGER NOT NULL DEFAULT 0,
        sent_at       BIGINT,
        accepted_at   BIGINT,
        finished_at   BIGINT,
        output        TEXT,
        reason        TEXT
    );
    CREATE INDEX commands_device ON commands (device_id, id);
    CREATE INDEX commands_device_pending ON commands (device_id, state, id)
        WHERE state IN ('queued', 'sent', 'accepted', 'running');
    CREATE INDEX commands_enterprise_pending ON commands (enterprise_id)
        WHERE state IN ('queued', 'sent', 'accepted', 'running');
    CREATE INDEX commands_pending_deadline ON commands (deadline)
        WHERE state IN ('queued', 'sent', 'accepted', 'running');
    "#,
    ),
    (
        "uploaded files",
        // Files devices upload (issue 11): the metadata in `files`, the content in `file_chunks`
        // (one row per FILE_CHUNK, deleted with its file) so that any node can serve a download.
        // A file and all of its chunks are inserted in one transaction. The chunks are stored
        // uncompressed (uploads are mostly compressed already; compressing again costs CPU).
        r#"
    CREATE TABLE files (
        id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        device_id     BIGINT NOT NULL REFERENCES devices (id),
        enterprise_id BIGINT NOT NULL REFERENCES enterprises (id),
        command_id    BIGINT REFERENCES commands (id),
        name          TEXT NOT NULL,
        size          BIGINT NOT NULL CHECK (size >= 0),
        sha256        BYTEA NOT NULL CHECK (length(sha256) = 32),
        created_at    BIGINT NOT NULL,
        expires_at    BIGINT NOT NULL
    );
    CREATE INDEX files_device ON files (device_id, id);
    CREATE INDEX files_expiry ON files (expires_at);
    CREATE TABLE file_chunks (
        file_id BIGINT NOT NULL REFERENCES files (id) ON DELETE CASCADE,
        idx     INTEGER NOT NULL CHECK (idx >= 0),
        bytes   BYTEA NOT NULL,
        PRIMARY KEY (file_id, idx)
    );
    ALTER TABLE file_chunks ALTER COLUMN bytes SET STORAGE EXTERNAL;
    "#,
    ),
    (
        "scheduled tasks",
        // Scheduled tasks (TSK-1, issue 11), as in the embedded schema: the due walk along a
        // partial index of active tasks, runs unique per (task, occurrence), per-device results;
        // runs and results go with their task when finished tasks are pruned.
        r#"
    CREATE TABLE tasks (
        id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        enterprise_id BIGINT NOT NULL REFERENCES enterprises (id),
        name          TEXT NOT NULL,
        kind          TEXT NOT NULL,
        args          TEXT NOT NULL,
        deadline_s    BIGINT NOT NULL,
        targets       TEXT NOT NULL,
        schedule      TEXT NOT NULL,
        time_zone     TEXT NOT NULL,
        missed        TEXT NOT NULL CHECK (missed IN ('run_once', 'skip')),
        state         TEXT NOT NULL CHECK (state IN ('active', 'paused', 'cancelled', 'completed')),
        created_by    BIGINT NOT NULL REFERENCES accounts (id),
        created_at    BIGINT NOT NULL,
        updated_at    BIGINT NOT NULL,
        next_run_at   BIGINT
    );
    CREATE INDEX tasks_enterprise ON tasks (enterprise_id, id);
    CREATE INDEX tasks_due ON tasks (next_run_at) WHERE state = 'active';
    CREATE TABLE task_runs (
        id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        task_id       BIGINT NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
        scheduled_for BIGINT NOT NULL,
        claimed_at    BIGINT NOT NULL,
        state         TEXT NOT NULL CHECK (state IN ('pending', 'done', 'missed')),
        finished_at   BIGINT,
        matched       BIGINT NOT NULL DEFAULT 0,
        queued        BIGINT NOT NULL DEFAULT 0,
        refused       BIGINT NOT NULL DEFAULT 0,
        note          TEXT,
        UNIQUE (task_id, scheduled_for)
    );
    CREATE INDEX task_runs_task ON task_runs (task_id, id);
    CREATE INDEX task_runs_pending ON task_runs (id) WHERE state = 'pending';
    CREATE TABLE task_run_devices (
        run_id     BIGINT NOT NULL REFERENCES task_runs (id) ON DELETE CASCADE,
        device_id  BIGINT NOT NULL,
        command_id BIGINT,
        refusal    TEXT,
        PRIMARY KEY (run_id, device_id)
    );
    "#,
    ),
    (
        "device inventory",
        // Device inventory (DEV-4), as in the embedded schema: attributes on the device row,
        // import logs and their row errors (deleted with their import).
        r#"
    ALTER TABLE devices ADD COLUMN attributes TEXT NOT NULL DEFAULT '{}';
    CREATE TABLE device_imports (
        id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        enterprise_id BIGINT NOT NULL REFERENCES enterprises (id),
        account_id    BIGINT NOT NULL REFERENCES accounts (id),
        mode          TEXT NOT NULL CHECK (mode IN ('create', 'overwrite', 'merge')),
        state         TEXT NOT NULL CHECK (state IN ('running', 'done', 'aborted')),
        started_at    BIGINT NOT NULL,
        finished_at   BIGINT,
        rows          BIGINT NOT NULL DEFAULT 0,
        created       BIGINT NOT NULL DEFAULT 0,
        updated       BIGINT NOT NULL DEFAULT 0,
        skipped       BIGINT NOT NULL DEFAULT 0,
        failed        BIGINT NOT NULL DEFAULT 0,
        errors_kept   BIGINT NOT NULL DEFAULT 0,
        note          TEXT
    );
    CREATE INDEX device_imports_enterprise ON device_imports (enterprise_id, id);
    CREATE TABLE device_import_errors (
        import_id BIGINT NOT NULL REFERENCES device_imports (id) ON DELETE CASCADE,
        line      BIGINT NOT NULL,
        col       TEXT NOT NULL,
        reason    TEXT NOT NULL,
        PRIMARY KEY (import_id, line)
    );
    "#,
    ),
    (
        "sites",
        // Sites (PRV-1), as in the embedded schema: the tree, subnets as JSON, Internet and
        // Intranet per enterprise (backfilled here, a trigger for new enterprises), the device's
        // site column without a foreign key and its indexes.
        r#"
    CREATE TABLE sites (
        id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        enterprise_id BIGINT NOT NULL REFERENCES enterprises (id),
        parent_id     BIGINT REFERENCES sites (id),
        kind          TEXT NOT NULL CHECK (kind IN ('internet', 'intranet', 'custom')),
        name          TEXT NOT NULL,
        description   TEXT NOT NULL DEFAULT '',
        location      TEXT NOT NULL DEFAULT '',
        subnets       TEXT NOT NULL DEFAULT '[]',
        created_at    BIGINT NOT NULL,
        updated_at    BIGINT NOT NULL,
        UNIQUE (enterprise_id, name)
    );
    CREATE UNIQUE INDEX sites_default ON sites (enterprise_id, kind) WHERE kind <> 'custom';
    CREATE INDEX sites_parent ON sites (parent_id);
    INSERT INTO sites (enterprise_id, kind, name, description, created_at, updated_at)
        SELECT id, 'internet', 'Internet', 'Devices outside the enterprise network', created_at, created_at FROM enterprises;
    INSERT INTO sites (enterprise_id, kind, name, description, created_at, updated_at)
        SELECT id, 'intranet', 'Intranet', 'Devices inside the enterprise network', created_at, created_at FROM enterprises;
    CREATE FUNCTION enterprises_default_sites() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO sites (enterprise_id, kind, name, description, created_at, updated_at) VALUES
            (NEW.id, 'internet', 'Internet', 'Devices outside the enterprise network', NEW.created_at, NEW.created_at),
            (NEW.id, 'intranet', 'Intranet', 'Devices inside the enterprise network', NEW.created_at, NEW.created_at);
        RETURN NULL;
    END $$;
    CREATE TRIGGER enterprises_default_sites AFTER INSERT ON enterprises
        FOR EACH ROW EXECUTE FUNCTION enterprises_default_sites();
    ALTER TABLE devices ADD COLUMN site_id BIGINT;
    CREATE INDEX devices_site ON devices (enterprise_id, site_id, online);
    CREATE INDEX devices_site_id ON devices (site_id, id);
    "#,
    ),
    (
        "device groups",
        // Device groups (PRV-2), as in the embedded schema.
        r#"
    CREATE TABLE device_groups (
        id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        enterprise_id BIGINT NOT NULL REFERENCES enterprises (id),
        name          TEXT NOT NULL,
        name_key      TEXT NOT NULL,
        description   TEXT NOT NULL DEFAULT '',
        created_at    BIGINT NOT NULL,
        updated_at    BIGINT NOT NULL,
        UNIQUE (enterprise_id, name_key)
    );
    CREATE TABLE group_members (
        device_id BIGINT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
        group_id  BIGINT NOT NULL REFERENCES device_groups (id) ON DELETE CASCADE,
        position  BIGINT NOT NULL,
        PRIMARY KEY (device_id, group_id)
    );
    CREATE INDEX group_members_group ON group_members (group_id, device_id);
    CREATE TABLE default_groups (
        enterprise_id BIGINT NOT NULL REFERENCES enterprises (id),
        group_id      BIGINT NOT NULL REFERENCES device_groups (id) ON DELETE CASCADE,
        position      BIGINT NOT NULL,
        PRIMARY KEY (enterprise_id, group_id)
    );
    CREATE INDEX default_groups_group ON default_groups (group_id);
    "#,
    ),
    (
        "configuration profiles, deployments and provisioning records",
        r#"
    CREATE TABLE profiles (
        id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        enterprise_id BIGINT NOT NULL REFERENCES enterprises (id),
        name          TEXT NOT NULL,
        settings      TEXT NOT NULL,
        created_at    BIGINT NOT NULL,
        updated_at    BIGINT NOT NULL,
        UNIQUE (enterprise_id, name)
    );
    CREATE TABLE profile_deployments (
        enterprise_id BIGINT NOT NULL REFERENCES enterprises (id),
        container     TEXT NOT NULL CHECK (container IN ('device', 'site', 'model', 'group', 'global')),
        member        TEXT NOT NULL,
        device_id     BIGINT REFERENCES devices (id) ON DELETE CASCADE,
        position      INTEGER NOT NULL,
        profile_id    BIGINT NOT NULL REFERENCES profiles (id),
        updated_at    BIGINT NOT NULL,
        PRIMARY KEY (enterprise_id, container, member, position)
    );
    CREATE INDEX profile_deployments_profile ON profile_deployments (profile_id);
    CREATE INDEX profile_deployments_device ON profile_deployments (device_id) WHERE device_id IS NOT NULL;
    CREATE TABLE provision_records (
        device_id BIGINT PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
        record    TEXT NOT NULL
    );
    "#,
    ),
    (
        "firmware images",
        // Firmware images (PRV-4, issue 12): the metadata in `firmware_images`, the content in
        // `firmware_chunks` (one row per FILE_CHUNK, deleted with its image), inserted in one
        // transaction, so that any node serves a download.
        r#"
    CREATE TABLE firmware_images (
        id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        enterprise_id BIGINT NOT NULL REFERENCES enterprises (id),
        model         TEXT NOT NULL,
        version       TEXT NOT NULL,
        name          TEXT NOT NULL,
        size          BIGINT NOT NULL CHECK (size > 0),
        sha256        BYTEA NOT NULL CHECK (length(sha256) = 32),
        uploaded_by   BIGINT NOT NULL REFERENCES accounts (id),
        uploaded_at   BIGINT NOT NULL
    );
    CREATE INDEX firmware_images_enterprise ON firmware_images (enterprise_id, id);
    CREATE TABLE firmware_chunks (
        image_id BIGINT NOT NULL REFERENCES firmware_images (id) ON DELETE CASCADE,
        idx      INTEGER NOT NULL CHECK (idx >= 0),
        bytes    BYTEA NOT NULL,
        PRIMARY KEY (image_id, idx)
    );
    ALTER TABLE firmware_chunks ALTER COLUMN bytes SET STORAGE EXTERNAL;
    "#,
    ),
    (
        "orders",
        // Orders (ORD-1, ORD-2, issue 17): what was sold to an enterprise, its validity as
        // instants, cancelled only while pending; no foreign key on the accounts (an order
        // outlives the account that placed it).
        r#"
    CREATE TABLE orders (
        id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        enterprise_id     BIGINT NOT NULL REFERENCES enterprises (id),
        seller_channel_id BIGINT REFERENCES channels (id),
        package           TEXT NOT NULL,
        max_devices       BIGINT NOT NULL CHECK (max_devices > 0),
        duration_months   BIGINT NOT NULL CHECK (duration_months > 0),
        effective_date    TEXT NOT NULL,
        starts_at         BIGINT NOT NULL,
        ends_at           BIGINT NOT NULL CHECK (ends_at > starts_at),
        amount            BIGINT NOT NULL CHECK (amount >= 0),
        created_by        BIGINT NOT NULL,
        created_at        BIGINT NOT NULL,
        cancelled_at      BIGINT,
        cancelled_by      BIGINT
    );
    CREATE INDEX orders_enterprise ON orders (enterprise_id, id);
    CREATE INDEX orders_created ON orders (created_at);
    "#,
    ),
    (
        "licences",
        // Licences (ORD-3, issue 17): each device's status kept in its row; per enterprise the
        // allowance, how many devices it licenses now and the next instant an order starts or
        // ends. Triggers keep the rule (oldest `allowance` devices licensed) in the transaction
        // that registers, deletes or moves a device (a registration locks the enterprise's row,
        // so concurrent ones count right); `licences.rs` re-ranks on order changes.
        r#"
    ALTER TABLE devices ADD COLUMN licence TEXT NOT NULL DEFAULT 'unknown';
    CREATE INDEX devices_licence ON devices (enterprise_id, licence, id);
    CREATE TABLE enterprise_licences (
        enterprise_id BIGINT PRIMARY KEY REFERENCES enterprises (id),
        metered       BOOLEAN NOT NULL,
        allowance     BIGINT NOT NULL CHECK (allowance >= 0),
        licensed      BIGINT NOT NULL CHECK (licensed >= 0),
        valid_until   BIGINT NOT NULL
    );
    CREATE INDEX enterprise_licences_due ON enterprise_licences (valid_until);
    CREATE FUNCTION fleetpulse_licence_rerank(e BIGINT) RETURNS void LANGUAGE sql AS $f$
        UPDATE devices d SET licence = CASE
            WHEN NOT EXISTS (SELECT 1 FROM enterprise_licences l WHERE l.enterprise_id = e AND l.metered)
            THEN 'unknown'
            WHEN d.id IN (SELECT id FROM devices WHERE enterprise_id = e ORDER BY id
                LIMIT coalesce((SELECT allowance FROM enterprise_licences WHERE enterprise_id = e), 0))
            THEN 'licensed' ELSE 'unlicensed' END
        WHERE d.enterprise_id = e;
        UPDATE enterprise_licences SET licensed =
            (SELECT count(*) FROM devices WHERE enterprise_id = e AND licence = 'licensed')
        WHERE enterprise_id = e;
    $f$;
    CREATE FUNCTION fleetpulse_licence_device() RETURNS trigger LANGUAGE plpgsql AS $f$
    BEGIN
        IF TG_OP = 'INSERT' THEN
            UPDATE enterprise_licences SET licensed = licensed + 1
            WHERE enterprise_id = NEW.enterprise_id AND metered AND licensed < allowance;
            IF FOUND THEN
                UPDATE devices SET licence = 'licensed' WHERE id = NEW.id;
            ELSIF EXISTS (SELECT 1 FROM enterprise_licences WHERE enterprise_id = NEW.enterprise_id AND metered) THEN
                UPDATE devices SET licence = 'unlicensed' WHERE id = NEW.id;
            END IF;
        ELSIF TG_OP = 'DELETE' THEN
            IF OLD.licence = 'licensed' THEN
                UPDATE devices SET licence = 'licensed' WHERE id =
                    (SELECT min(id) FROM devices WHERE enterprise_id = OLD.enterprise_id AND licence = 'unlicensed');
                IF NOT FOUND THEN
                    UPDATE enterprise_licences SET licensed = licensed - 1 WHERE enterprise_id = OLD.enterprise_id;
                END IF;
            END IF;
        ELSE
            PERFORM fleetpulse_licence_rerank(OLD.enterprise_id);
            PERFORM fleetpulse_licence_rerank(NEW.enterprise_id);
        END IF;
        RETURN NULL;
    END
    $f$;
    CREATE TRIGGER devices_licence_rows AFTER INSERT OR DELETE ON devices
        FOR EACH ROW EXECUTE FUNCTION fleetpulse_licence_device();
    CREATE TRIGGER devices_licence_move AFTER UPDATE OF enterprise_id ON devices
        FOR EACH ROW WHEN (OLD.enterprise_id IS DISTINCT FROM NEW.enterprise_id)
        EXECUTE FUNCTION fleetpulse_licence_device();
    "#,
    ),
    (
        "devices by enterprise and age",
        // One enterprise's devices in the list's default order (issue 12): an enterprise
        // admin's list and the export read pages along this index instead of sorting.
        r#"
    CREATE INDEX devices_enterprise_created ON devices (enterprise_id, created_at, id);
    "#,
    ),
    (
        "maintenance windows",
        // Maintenance windows (issue 18): settings as one JSON document, as strategies; the mark
        // a window left on an alarm activation, one row per activation (the latest step).
        r#"
    CREATE TABLE maintenance_windows (
        id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        enterprise_id BIGINT NOT NULL REFERENCES enterprises (id),
        settings      TEXT NOT NULL,
        created_at    BIGINT NOT NULL,
        updated_at    BIGINT NOT NULL
    );
    CREATE INDEX maintenance_windows_enterprise ON maintenance_windows (enterprise_id, id);
    CREATE TABLE alarm_window_marks (
        device_id     BIGINT NOT NULL,
        code          INTEGER NOT NULL,
        first_at      BIGINT NOT NULL,
        enterprise_id BIGINT NOT NULL,
        window_id     BIGINT NOT NULL,
        window_name   TEXT NOT NULL,
        state         TEXT NOT NULL,
        at            BIGINT NOT NULL,
        until         BIGINT,
        PRIMARY KEY (device_id, code, first_at)
    );
    CREATE INDEX alarm_window_marks_at ON alarm_window_marks (at);
    "#,
    ),
    (
        "notification audit",
        // The notification audit (issue 18): alarm entries name their activation, message
        // entries (device_id NULL) the outbox message's key; and what the retention pass deletes
        // by: the settled outbox by age, item keys by message.
        r#"
    CREATE TABLE notification_audit (
        id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        enterprise_id BIGINT,
        device_id     BIGINT,
        code          INTEGER,
        first_at      BIGINT,
        at            BIGINT NOT NULL,
        event         TEXT NOT NULL,
        receiver      TEXT,
        message_key   TEXT,
        detail        TEXT NOT NULL
    );
    CREATE INDEX notification_audit_alarm ON notification_audit (device_id, code, first_at)
        WHERE device_id IS NOT NULL;
    CREATE INDEX notification_audit_message ON notification_audit (message_key) WHERE device_id IS NULL;
    CREATE INDEX notification_audit_at ON notification_audit (at);
    CREATE INDEX outbox_settled ON outbox (state, created_at);
    CREATE INDEX outbox_items_message ON outbox_items (message_id);
    "#,
    ),
    (
        "strategies down the tenant tree",
        // Issue 18: a strategy belongs to an enterprise or to a channel (one id space); a
        // channel's says how far it reaches and what enterprises may do (JSON); enterprises'
        // choices about inherited strategies.
        r#"
    ALTER TABLE alarm_strategies ALTER COLUMN enterprise_id DROP NOT NULL;
    ALTER TABLE alarm_strategies ADD COLUMN channel_id BIGINT REFERENCES channels (id);
    ALTER TABLE alarm_strategies ADD COLUMN inheritance TEXT;
    ALTER TABLE alarm_strategies ADD CONSTRAINT alarm_strategies_owner
        CHECK ((enterprise_id IS NULL) <> (channel_id IS NULL));
    ALTER TABLE alarm_strategies ADD CONSTRAINT alarm_strategies_inheritance
        CHECK ((channel_id IS NULL) = (inheritance IS NULL));
    CREATE INDEX alarm_strategies_channel ON alarm_strategies (channel_id, id);
    CREATE TABLE alarm_strategy_choices (
        enterprise_id  BIGINT NOT NULL REFERENCES enterprises (id),
        strategy_id    BIGINT NOT NULL REFERENCES alarm_strategies (id) ON DELETE CASCADE,
        replacement_id BIGINT REFERENCES alarm_strategies (id) ON DELETE CASCADE,
        at             BIGINT NOT NULL,
        PRIMARY KEY (enterprise_id, strategy_id)
    );
    CREATE INDEX alarm_strategy_choices_strategy ON alarm_strategy_choices (strategy_id);
    CREATE INDEX alarm_strategy_choices_replacement ON alarm_strategy_choices (replacement_id);
    "#,
    ),
    (
        "alarm engine state",
        // Issue 18 item 6: the alarm engine's saved state, one JSON document.
        r#"
    CREATE TABLE alarm_engine_state (
        id       INTEGER PRIMARY KEY CHECK (id = 1),
        state    TEXT NOT NULL,
        saved_at BIGINT NOT NULL
    );
    "#,
    ),
    (
        "tenancy",
        // Tenancy (TEN-1, TEN-5, DEV-1, issue 17), as in the embedded schema: tenant freezes and
        // the accounts each froze, deleted sub-accounts kept as tombstones, the RPS device list;
        // the device-management flag turned on for enterprises created before it took effect.
        r#"
    ALTER TABLE accounts ADD COLUMN frozen_by TEXT;
    ALTER TABLE accounts ADD COLUMN deleted_at BIGINT;
    CREATE INDEX accounts_frozen_by ON accounts (frozen_by) WHERE frozen_by IS NOT NULL;
    CREATE TABLE tenant_freezes (
        kind       TEXT NOT NULL CHECK (kind IN ('channel', 'enterprise')),
        tenant_id  BIGINT NOT NULL,
        frozen_at  BIGINT NOT NULL,
        frozen_by  BIGINT NOT NULL,
        accounts   BIGINT NOT NULL CHECK (accounts >= 0),
        PRIMARY KEY (kind, tenant_id)
    );
    UPDATE enterprises SET profile = jsonb_set(profile::jsonb, '{device_management}', 'true'::jsonb)::text;
    CREATE TABLE rps_devices (
        id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        enterprise_id BIGINT NOT NULL REFERENCES enterprises (id),
        device_key    TEXT NOT NULL UNIQUE,
        server_url    TEXT NOT NULL,
        created_at    BIGINT NOT NULL,
        updated_at    BIGINT NOT NULL
    );
    CREATE INDEX rps_devices_enterprise ON rps_devices (enterprise_id, id);
    "#,
    ),
    (
        "site incidents",
        // Site incidents (issue 18 item 3), as in the embedded schema.
        r#"
    CREATE TABLE alarm_incidents (
        id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        enterprise_id BIGINT NOT NULL,
        strategy_id   BIGINT NOT NULL,
        site_id       BIGINT NOT NULL,
        site_name     TEXT NOT NULL,
        code          INTEGER NOT NULL,
        opened_at     BIGINT NOT NULL,
        updated_at    BIGINT NOT NULL,
        resolved_at   BIGINT,
        site_devices  BIGINT NOT NULL,
        affected      BIGINT NOT NULL,
        back          BIGINT NOT NULL,
        UNIQUE (enterprise_id, strategy_id, site_id, code, opened_at)
    );
    CREATE INDEX alarm_incidents_enterprise ON alarm_incidents (enterprise_id, id);
    CREATE TABLE alarm_incident_members (
        incident_id BIGINT NOT NULL REFERENCES alarm_incidents (id) ON DELETE CASCADE,
        device_id   BIGINT NOT NULL,
        code        INTEGER NOT NULL,
        first_at    BIGINT NOT NULL,
        back        BOOLEAN NOT NULL,
        PRIMARY KEY (incident_id, device_id)
    );
    CREATE INDEX alarm_incident_members_activation ON alarm_incident_members (device_id, code, first_at);
    "#,
    ),
    (
        "dead letters",
        // Issue 18 item 5, as in the embedded schema: events given up after their retries.
        r#"
    CREATE TABLE dead_letters (
        id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        stage         TEXT NOT NULL,
        reason        TEXT NOT NULL,
        detail        TEXT NOT NULL,
        enterprise_id BIGINT,
        device_id     BIGINT,
        payload       TEXT NOT NULL,
        attempts      BIGINT NOT NULL CHECK (attempts >= 0),
        at            BIGINT NOT NULL
    );
    CREATE INDEX dead_letters_stage ON dead_letters (stage, id);
    "#,
    ),
    (
        "cluster nodes",
        // Several ingest nodes (issue 16): membership with heartbeat leases, the node holding
        // each device's session, named leases for one-node-at-a-time roles (the outbox sender).
        // Times are the database's clock, unix milliseconds.
        r#"
    CREATE TABLE cluster_nodes (
        id           TEXT PRIMARY KEY,
        quic_addr    TEXT NOT NULL,
        http_addr    TEXT NOT NULL,
        sessions     BIGINT NOT NULL DEFAULT 0,
        started_at   BIGINT NOT NULL,
        heartbeat_at BIGINT NOT NULL,
        lease_until  BIGINT NOT NULL,
        state        TEXT NOT NULL CHECK (state IN ('up', 'down'))
    );
    CREATE TABLE device_sessions (
        device_id BIGINT PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
        node_id   TEXT NOT NULL,
        since     BIGINT NOT NULL
    );
    CREATE INDEX device_sessions_node ON device_sessions (node_id);
    CREATE TABLE cluster_leases (
        name        TEXT PRIMARY KEY,
        node_id     TEXT NOT NULL,
        lease_until BIGINT NOT NULL
    );
    "#,
    ),
    (
        "alarm engine state per owner",
        // Issue 16: each node of several saves its own engine's state; '' is the one engine of a
        // single node, which keeps the document saved so far.
        r#"
    ALTER TABLE alarm_engine_state ADD COLUMN owner TEXT NOT NULL DEFAULT '';
    ALTER TABLE alarm_engine_state DROP COLUMN id;
    ALTER TABLE alarm_engine_state ADD PRIMARY KEY (owner);
    ALTER TABLE alarm_engine_state ALTER COLUMN owner DROP DEFAULT;
    "#,
    ),
    (
        "engine events queue",
        // Issue 16 item 3: alarm event batches of an enterprise bucket another node holds,
        // queued for that node (it takes them oldest first), so a holder's death loses none.
        r#"
    CREATE TABLE engine_events (
        id      BIGSERIAL PRIMARY KEY,
        bucket  INTEGER NOT NULL,
        payload TEXT NOT NULL
    );
    CREATE INDEX engine_events_bucket ON engine_events (bucket, id);
    "#,
    ),
    (
        "relay grants",
        // ING-9, issue 15: the credentials relays authenticate with, as SHA-256, scoped to one
        // enterprise or one channel (its subtree).
        r#"
    CREATE TABLE relays (
        id              BIGSERIAL PRIMARY KEY,
        name            TEXT NOT NULL,
        scope_kind      TEXT NOT NULL CHECK (scope_kind IN ('channel', 'enterprise')),
        scope_id        BIGINT NOT NULL,
        credential_hash BYTEA NOT NULL UNIQUE,
        created_by      BIGINT NOT NULL,
        created_at      BIGINT NOT NULL,
        rotated_at      BIGINT,
        revoked_at      BIGINT,
        last_seen_at    BIGINT
    );
    "#,
    ),
];

/// The schema version this build writes.
pub const CURRENT_VERSION: u32 = MIGRATIONS.len() as u32;

/// The migrator over [`MIGRATIONS`].
fn migrator() -> Migrator {
    let migrations = MIGRATIONS
        .iter()
        .zip(1..)
        .map(|(&(description, sql), version)| {
            Migration::new(version, Cow::Borrowed(description), MigrationType::Simple, sql.into_sql_str(), false)
        })
        .collect();
    Migrator::with_migrations(migrations)
}

/// Applies the migrations the database lacks, each in its own transaction.
///
/// Fails with [`StoreError::Migration`] if one fails, if an applied one was changed, or if the
/// database has migrations this build does not know (it is newer than this build).
pub async fn migrate(conn: &mut PgConnection) -> Result<u32> {
    migrator().run(conn).await.map_err(|e| {
        let version = match &e {
            MigrateError::ExecuteMigration(_, v)
            | MigrateError::VersionMissing(v)
            | MigrateError::VersionMismatch(v)
            | MigrateError::VersionNotPresent(v)
            | MigrateError::VersionTooOld(v, _)
            | MigrateError::VersionTooNew(v, _)
            | MigrateError::Dirty(v) => u32::try_from(*v).unwrap_or(u32::MAX),
            _ => 0,
        };
        StoreError::Migration { version, reason: e.to_string() }
    })?;
    tracing::debug!(message = "PostgreSQL entity schema is current.", version = CURRENT_VERSION);
    Ok(CURRENT_VERSION)
}
