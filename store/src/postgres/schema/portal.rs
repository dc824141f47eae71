//! The PostgreSQL migrations of the portal core, versions 1 to 16: accounts and their security,
//! tenants, the outbox, the operation log, devices with their snapshots, labels and search.
//! Append-only, as every migration (`super`).

/// Versions 1 to 16, in order: (description, SQL).
pub(super) const MIGRATIONS: &[(&str, &str)] = &[
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
];
