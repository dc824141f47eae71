//! The PostgreSQL migrations from version 17 on, for managing the fleet: the downlink (commands,
//! files, tasks), inventory, sites, groups, profiles, firmware, orders and licences, alarm
//! windows, audit, inheritance and incidents, dead letters, several nodes and relay grants.
//! Append-only, as every migration (`super`): a new one goes at the end of this list.

/// Versions 17 on, in order: (description, SQL).
pub(super) const MIGRATIONS: &[(&str, &str)] = &[
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
