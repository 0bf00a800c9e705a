//! [`Store`] on an embedded SQLite database (one file, WAL journal,
//! `synchronous=FULL`, foreign keys on, `secure_delete` on so erased key
//! material does not linger in free pages). Schema changes are versioned
//! migrations recorded in `schema_migrations` and applied at open.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::types::FromSql;
use rusqlite::{Connection, OptionalExtension, Params, Row, Transaction, params};

use crate::store::{
    Admin, Client, ClientRule, DEFAULT_PROFILE, GuardPoint, Key, Policy, PolicySet, Profile,
    RegToken, Sealer, Store, StoreError, StoreResult, TeRule,
};

/// Versioned migrations; index + 1 is the version. Never edit one that has
/// shipped: append a new one.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE admins (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE admin_tokens (
    token_hash TEXT PRIMARY KEY,
    admin TEXT NOT NULL REFERENCES admins(name) ON DELETE CASCADE,
    expires INTEGER NOT NULL
);
CREATE TABLE regtokens (
    id TEXT PRIMARY KEY,
    token TEXT NOT NULL UNIQUE,
    lifetime INTEGER NOT NULL,
    max_clients INTEGER NOT NULL,
    used INTEGER NOT NULL DEFAULT 0,
    cert_duration INTEGER NOT NULL,
    name_prefix TEXT NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE clients (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    profile_id TEXT NOT NULL,
    host_group TEXT NOT NULL,
    registration_allowed INTEGER NOT NULL,
    communication_enabled INTEGER NOT NULL,
    client_locked INTEGER NOT NULL,
    system_locked INTEGER NOT NULL,
    hw_signature TEXT NOT NULL,
    cert_serial TEXT NOT NULL,
    cert_fingerprint TEXT NOT NULL UNIQUE,
    cert_not_after INTEGER NOT NULL,
    cert_duration INTEGER NOT NULL,
    reported_health TEXT,
    reported_version TEXT,
    reported_status TEXT,
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL
);
CREATE TABLE policies (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    json TEXT NOT NULL,
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL
);
CREATE TABLE guardpoints (
    id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL REFERENCES clients(id) ON DELETE CASCADE,
    guard_path TEXT NOT NULL,
    guard_point_type TEXT NOT NULL
        CHECK (guard_point_type IN ('directory_auto', 'directory_manual')),
    policy_id TEXT NOT NULL REFERENCES policies(id) ON DELETE RESTRICT,
    guard_enabled INTEGER NOT NULL,
    created INTEGER NOT NULL,
    UNIQUE (client_id, guard_path)
);
CREATE TABLE keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    algorithm TEXT NOT NULL CHECK (algorithm = 'AES'),
    size INTEGER NOT NULL CHECK (size = 256),
    persistent_on_client INTEGER NOT NULL,
    encryption_mode TEXT NOT NULL CHECK (encryption_mode IN ('XTS', 'CBC_CS1', 'GCM')),
    cte_versioned INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('active', 'revoked', 'destroyed')),
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL
);
CREATE TABLE key_versions (
    key_id TEXT NOT NULL REFERENCES keys(id) ON DELETE CASCADE,
    version INTEGER NOT NULL CHECK (version >= 1),
    sealed BLOB,
    created INTEGER NOT NULL,
    PRIMARY KEY (key_id, version)
);
CREATE TABLE audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    client_id TEXT NOT NULL,
    received INTEGER NOT NULL,
    line TEXT NOT NULL
);
CREATE INDEX audit_client ON audit(client_id);
"#,
    r#"
CREATE TABLE client_escrow (
    client_id TEXT PRIMARY KEY REFERENCES clients(id) ON DELETE CASCADE,
    sealed BLOB NOT NULL,
    updated INTEGER NOT NULL
);
"#,
    r#"
CREATE TABLE client_profiles (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    concise_logging INTEGER NOT NULL,
    learn_mode_allowed INTEGER NOT NULL,
    poll_interval INTEGER NOT NULL CHECK (poll_interval BETWEEN 1 AND 3600),
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL
);
INSERT INTO client_profiles (id, name, description, concise_logging, learn_mode_allowed,
    poll_interval, created, updated)
VALUES ('00000000-0000-4000-8000-000000000001', 'DefaultClientProfile',
    'Profile of clients registered without one', 0, 1, 10,
    CAST(strftime('%s', 'now') AS INTEGER), CAST(strftime('%s', 'now') AS INTEGER));
UPDATE clients SET profile_id = COALESCE(
    (SELECT p.id FROM client_profiles p WHERE p.name = clients.profile_id OR p.id = clients.profile_id),
    '00000000-0000-4000-8000-000000000001');
CREATE INDEX clients_profile ON clients(profile_id);
CREATE TABLE policy_sets (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('user', 'process', 'resource')),
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    entries TEXT NOT NULL,
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    UNIQUE (kind, name)
);
CREATE TABLE policy_set_refs (
    policy_id TEXT NOT NULL REFERENCES policies(id) ON DELETE CASCADE,
    set_id TEXT NOT NULL REFERENCES policy_sets(id) ON DELETE RESTRICT,
    PRIMARY KEY (policy_id, set_id)
);
CREATE INDEX policy_set_refs_set ON policy_set_refs(set_id);
"#,
    r#"
CREATE TABLE te_rules (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    json TEXT NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE client_rules (
    client_id TEXT NOT NULL REFERENCES clients(id) ON DELETE CASCADE,
    rule_id TEXT NOT NULL REFERENCES te_rules(id) ON DELETE RESTRICT,
    key TEXT NOT NULL,
    operation TEXT NOT NULL CHECK (operation IN ('encrypt', 'rotate', 'decrypt')),
    shallow INTEGER NOT NULL,
    generation INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    PRIMARY KEY (client_id, rule_id)
);
CREATE INDEX client_rules_rule ON client_rules(rule_id);
"#,
];

/// The SQLite store. One connection behind a mutex: the reference server
/// is not built for high write rates, and SQLite serialises writers anyway.
pub struct SqliteStore {
    conn: Mutex<Connection>,
}

fn be(e: rusqlite::Error) -> StoreError {
    if let rusqlite::Error::SqliteFailure(f, _) = &e
        && f.code == rusqlite::ErrorCode::ConstraintViolation
    {
        return StoreError::Conflict("conflicts with an existing resource".into());
    }
    StoreError::Backend(e.to_string())
}

impl SqliteStore {
    /// Open (creating if needed) the database at `path` and apply pending
    /// migrations.
    ///
    /// # Errors
    /// When the file cannot be opened or a migration fails.
    pub fn open(path: &Path) -> StoreResult<SqliteStore> {
        let mut conn = Connection::open(path).map_err(be)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(be)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(be)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!(
                "journal_mode is {mode}, not wal"
            )));
        }
        conn.execute_batch(
            "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA secure_delete=ON;",
        )
        .map_err(be)?;
        migrate(&mut conn)?;
        Ok(SqliteStore {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> StoreResult<MutexGuard<'_, Connection>> {
        self.conn
            .lock()
            .map_err(|_| StoreError::Backend("store lock poisoned".into()))
    }

    /// Run `f` in an immediate transaction, committing on success.
    fn tx<T>(&self, f: impl FnOnce(&Transaction<'_>) -> StoreResult<T>) -> StoreResult<T> {
        let mut conn = self.lock()?;
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(be)?;
        let out = f(&tx)?;
        tx.commit().map_err(be)?;
        Ok(out)
    }

    /// Every row of `sql`, mapped by `row`.
    fn all<T>(
        &self,
        sql: &str,
        p: impl Params,
        row: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> StoreResult<Vec<T>> {
        rows(&*self.lock()?, sql, p, row)
    }

    /// The row of `sql` mapped by `row`, if there is one.
    fn one<T>(
        &self,
        sql: &str,
        p: impl Params,
        row: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> StoreResult<Option<T>> {
        opt_row(&*self.lock()?, sql, p, row)
    }

    /// Execute `sql` in its own transaction, mapping its failure with `err`.
    fn write(
        &self,
        sql: &str,
        p: impl Params,
        err: impl FnOnce(rusqlite::Error) -> StoreError,
    ) -> StoreResult<()> {
        self.tx(|tx| {
            tx.execute(sql, p).map_err(err)?;
            Ok(())
        })
    }

    /// Execute `sql` in its own transaction; [`StoreError::NotFound`] for
    /// `what` if no row changed.
    fn change(&self, sql: &str, p: impl Params, what: &str) -> StoreResult<()> {
        self.tx(|tx| exec_changed(tx, sql, p, what))
    }

    /// Checkpoint the WAL into the main file so overwritten secrets do not
    /// linger in it; failures are only logged.
    fn checkpoint(&self, after: &str) {
        match self.lock() {
            Ok(conn) => {
                if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)") {
                    log::warn!("checkpoint after {after} failed: {e}");
                }
            }
            Err(e) => log::warn!("checkpoint after {after} failed: {e}"),
        }
    }

    /// The schema version in force.
    ///
    /// # Errors
    /// On a backend failure.
    pub fn schema_version(&self) -> StoreResult<i64> {
        scalar(
            &*self.lock()?,
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
        )
    }
}

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY, applied INTEGER NOT NULL)",
    )
    .map_err(be)?;
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(be)?;
    let current: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(be)?;
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    if current > known {
        return Err(StoreError::Backend(format!(
            "database schema version {current} is newer than this keymgr ({known})"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i64::try_from(i).unwrap_or(i64::MAX) + 1;
        if version <= current {
            continue;
        }
        tx.execute_batch(sql).map_err(be)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied) VALUES (?1, ?2)",
            params![version, crate::util::now()],
        )
        .map_err(be)?;
        log::info!("applied schema migration {version}");
    }
    tx.commit().map_err(be)
}

const REGTOKEN_COLS: &str =
    "id, token, lifetime, max_clients, used, cert_duration, name_prefix, created";

fn regtoken_row(r: &Row<'_>) -> rusqlite::Result<RegToken> {
    Ok(RegToken {
        id: r.get(0)?,
        token: r.get(1)?,
        lifetime: r.get(2)?,
        max_clients: r.get(3)?,
        used: r.get(4)?,
        cert_duration: r.get(5)?,
        name_prefix: r.get(6)?,
        created: r.get(7)?,
    })
}

const CLIENT_COLS: &str = "id, name, description, profile_id, host_group, registration_allowed, \
    communication_enabled, client_locked, system_locked, hw_signature, cert_serial, \
    cert_fingerprint, cert_not_after, cert_duration, reported_health, reported_version, \
    reported_status, created, updated";

fn client_row(r: &Row<'_>) -> rusqlite::Result<Client> {
    Ok(Client {
        id: r.get(0)?,
        name: r.get(1)?,
        description: r.get(2)?,
        profile_id: r.get(3)?,
        host_group: r.get(4)?,
        registration_allowed: r.get(5)?,
        communication_enabled: r.get(6)?,
        client_locked: r.get(7)?,
        system_locked: r.get(8)?,
        hw_signature: r.get(9)?,
        cert_serial: r.get(10)?,
        cert_fingerprint: r.get(11)?,
        cert_not_after: r.get(12)?,
        cert_duration: r.get(13)?,
        reported_health: r.get(14)?,
        reported_version: r.get(15)?,
        reported_status: r.get(16)?,
        created: r.get(17)?,
        updated: r.get(18)?,
    })
}

const GP_SELECT: &str = "SELECT g.id, g.client_id, g.guard_path, g.guard_point_type, \
    g.policy_id, p.name, g.guard_enabled, g.created \
    FROM guardpoints g JOIN policies p ON p.id = g.policy_id";

const RULE_COLS: &str = "id, name, json, created";

fn rule_row(r: &Row<'_>) -> rusqlite::Result<TeRule> {
    Ok(TeRule {
        id: r.get(0)?,
        name: r.get(1)?,
        json: r.get(2)?,
        created: r.get(3)?,
    })
}

const CLIENT_RULE_SELECT: &str = "SELECT c.client_id, c.rule_id, r.name, r.json, c.key, \
    c.operation, c.shallow, c.generation, c.updated \
    FROM client_rules c JOIN te_rules r ON r.id = c.rule_id";

fn client_rule_row(r: &Row<'_>) -> rusqlite::Result<ClientRule> {
    Ok(ClientRule {
        client_id: r.get(0)?,
        rule_id: r.get(1)?,
        rule_name: r.get(2)?,
        rule_json: r.get(3)?,
        key: r.get(4)?,
        operation: r.get(5)?,
        shallow: r.get(6)?,
        generation: r.get(7)?,
        updated: r.get(8)?,
    })
}

fn gp_row(r: &Row<'_>) -> rusqlite::Result<GuardPoint> {
    Ok(GuardPoint {
        id: r.get(0)?,
        client_id: r.get(1)?,
        guard_path: r.get(2)?,
        guard_point_type: r.get(3)?,
        policy_id: r.get(4)?,
        policy_name: r.get(5)?,
        guard_enabled: r.get(6)?,
        created: r.get(7)?,
    })
}

fn policy_row(r: &Row<'_>) -> rusqlite::Result<Policy> {
    Ok(Policy {
        id: r.get(0)?,
        name: r.get(1)?,
        json: r.get(2)?,
        created: r.get(3)?,
        updated: r.get(4)?,
    })
}

const PROFILE_COLS: &str = "id, name, description, concise_logging, learn_mode_allowed, \
    poll_interval, created, updated";

fn profile_row(r: &Row<'_>) -> rusqlite::Result<Profile> {
    Ok(Profile {
        id: r.get(0)?,
        name: r.get(1)?,
        description: r.get(2)?,
        concise_logging: r.get(3)?,
        learn_mode_allowed: r.get(4)?,
        poll_interval: r.get(5)?,
        created: r.get(6)?,
        updated: r.get(7)?,
    })
}

const SET_COLS: &str = "id, kind, name, description, entries, created, updated";

fn set_row(r: &Row<'_>) -> rusqlite::Result<PolicySet> {
    Ok(PolicySet {
        id: r.get(0)?,
        kind: r.get(1)?,
        name: r.get(2)?,
        description: r.get(3)?,
        entries: r.get(4)?,
        created: r.get(5)?,
        updated: r.get(6)?,
    })
}

fn set_refs_put(tx: &Connection, policy_id: &str, set_ids: &[String]) -> StoreResult<()> {
    exec(
        tx,
        "DELETE FROM policy_set_refs WHERE policy_id = ?1",
        [policy_id],
    )?;
    for sid in set_ids {
        let exists: bool = scalar(
            tx,
            "SELECT EXISTS(SELECT 1 FROM policy_sets WHERE id = ?1)",
            [sid],
        )?;
        if !exists {
            return Err(StoreError::Invalid(
                "a policy set the policy references was deleted meanwhile".into(),
            ));
        }
        exec(
            tx,
            "INSERT OR IGNORE INTO policy_set_refs (policy_id, set_id) VALUES (?1, ?2)",
            [policy_id, sid],
        )?;
    }
    Ok(())
}

const KEY_COLS: &str = "id, name, algorithm, size, persistent_on_client, encryption_mode, \
    cte_versioned, state, created, updated";

fn key_row(r: &Row<'_>) -> rusqlite::Result<Key> {
    Ok(Key {
        id: r.get(0)?,
        name: r.get(1)?,
        algorithm: r.get(2)?,
        size: r.get(3)?,
        persistent_on_client: r.get(4)?,
        encryption_mode: r.get(5)?,
        cte_versioned: r.get(6)?,
        state: r.get(7)?,
        created: r.get(8)?,
        updated: r.get(9)?,
        versions: Vec::new(),
    })
}

fn key_versions(conn: &Connection, key: &mut Key) -> StoreResult<()> {
    let mut st = conn
        .prepare_cached("SELECT version FROM key_versions WHERE key_id = ?1 ORDER BY version")
        .map_err(be)?;
    key.versions = st
        .query_map([&key.id], |r| r.get::<_, u32>(0))
        .map_err(be)?
        .collect::<Result<_, _>>()
        .map_err(be)?;
    Ok(())
}

fn key_state(tx: &Connection, id: &str) -> StoreResult<String> {
    opt_row(tx, "SELECT state FROM keys WHERE id = ?1", [id], |r| {
        r.get(0)
    })?
    .ok_or_else(|| StoreError::NotFound("key not found".into()))
}

fn changed(n: usize, what: &str) -> StoreResult<()> {
    if n == 0 {
        Err(StoreError::NotFound(format!("{what} not found")))
    } else {
        Ok(())
    }
}

/// Every row of `sql`, mapped by `row`.
fn rows<T>(
    conn: &Connection,
    sql: &str,
    p: impl Params,
    row: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
) -> StoreResult<Vec<T>> {
    let mut st = conn.prepare(sql).map_err(be)?;
    st.query_map(p, row)
        .map_err(be)?
        .collect::<Result<_, _>>()
        .map_err(be)
}

/// The row of `sql` mapped by `row`, if there is one.
fn opt_row<T>(
    conn: &Connection,
    sql: &str,
    p: impl Params,
    row: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
) -> StoreResult<Option<T>> {
    conn.query_row(sql, p, row).optional().map_err(be)
}

/// The first column of the one row `sql` yields.
fn scalar<T: FromSql>(conn: &Connection, sql: &str, p: impl Params) -> StoreResult<T> {
    conn.query_row(sql, p, |r| r.get(0)).map_err(be)
}

/// Execute `sql`, returning the number of rows changed.
fn exec(conn: &Connection, sql: &str, p: impl Params) -> StoreResult<usize> {
    conn.execute(sql, p).map_err(be)
}

/// Execute `sql`; [`StoreError::NotFound`] for `what` if no row changed.
fn exec_changed(conn: &Connection, sql: &str, p: impl Params, what: &str) -> StoreResult<()> {
    changed(exec(conn, sql, p)?, what)
}

/// Map a backend error like [`be`], but a conflict to one saying `msg()`.
fn conflict(msg: impl FnOnce() -> String) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| match be(e) {
        StoreError::Conflict(_) => StoreError::Conflict(msg()),
        other => other,
    }
}

impl Store for SqliteStore {
    fn admin_put(&self, a: &Admin, now: i64) -> StoreResult<()> {
        self.write(
            "INSERT INTO admins (name, password_hash, created) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET password_hash = excluded.password_hash",
            params![a.name, a.password_hash, now],
            be,
        )
    }

    fn admin_get(&self, name: &str) -> StoreResult<Option<Admin>> {
        self.one(
            "SELECT name, password_hash FROM admins WHERE name = ?1",
            [name],
            |r| {
                Ok(Admin {
                    name: r.get(0)?,
                    password_hash: r.get(1)?,
                })
            },
        )
    }

    fn admin_token_insert(
        &self,
        hash: &str,
        admin: &str,
        expires: i64,
        now: i64,
    ) -> StoreResult<()> {
        self.tx(|tx| {
            exec(tx, "DELETE FROM admin_tokens WHERE expires <= ?1", [now])?;
            exec(
                tx,
                "INSERT INTO admin_tokens (token_hash, admin, expires) VALUES (?1, ?2, ?3)",
                params![hash, admin, expires],
            )?;
            Ok(())
        })
    }

    fn admin_token_check(&self, hash: &str, now: i64) -> StoreResult<Option<String>> {
        self.one(
            "SELECT admin FROM admin_tokens WHERE token_hash = ?1 AND expires > ?2",
            params![hash, now],
            |r| r.get(0),
        )
    }

    fn regtoken_insert(&self, t: &RegToken) -> StoreResult<()> {
        self.write(
            &format!("INSERT INTO regtokens ({REGTOKEN_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8)"),
            params![
                t.id,
                t.token,
                t.lifetime,
                t.max_clients,
                t.used,
                t.cert_duration,
                t.name_prefix,
                t.created
            ],
            be,
        )
    }

    fn regtoken_list(&self) -> StoreResult<Vec<RegToken>> {
        self.all(
            &format!("SELECT {REGTOKEN_COLS} FROM regtokens ORDER BY created, rowid"),
            [],
            regtoken_row,
        )
    }

    fn regtoken_by_value(&self, token: &str) -> StoreResult<Option<RegToken>> {
        self.one(
            &format!("SELECT {REGTOKEN_COLS} FROM regtokens WHERE token = ?1"),
            [token],
            regtoken_row,
        )
    }

    fn regtoken_delete(&self, id: &str) -> StoreResult<()> {
        self.change(
            "DELETE FROM regtokens WHERE id = ?1",
            [id],
            "registration token",
        )
    }

    fn register_client(&self, token: &str, now: i64, c: &Client) -> StoreResult<()> {
        self.tx(|tx| {
            let t = opt_row(
                tx,
                &format!("SELECT {REGTOKEN_COLS} FROM regtokens WHERE token = ?1"),
                [token],
                regtoken_row,
            )?
            .ok_or_else(|| StoreError::Refused("unknown registration token".into()))?;
            if now >= t.expires() {
                return Err(StoreError::Refused("registration token expired".into()));
            }
            if t.used >= t.max_clients {
                return Err(StoreError::Refused("registration token exhausted".into()));
            }
            let exists: bool = scalar(
                tx,
                "SELECT EXISTS(SELECT 1 FROM clients WHERE name = ?1)",
                [&c.name],
            )?;
            if exists {
                return Err(StoreError::Conflict(format!(
                    "a client named {:?} is already registered",
                    c.name
                )));
            }
            let profile: bool = scalar(
                tx,
                "SELECT EXISTS(SELECT 1 FROM client_profiles WHERE id = ?1)",
                [&c.profile_id],
            )?;
            if !profile {
                return Err(StoreError::Invalid(
                    "the client profile does not exist".into(),
                ));
            }
            exec(
                tx,
                "UPDATE regtokens SET used = used + 1 WHERE id = ?1",
                [&t.id],
            )?;
            exec(
                tx,
                &format!(
                    "INSERT INTO clients ({CLIENT_COLS}) VALUES \
                     (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18,?19)"
                ),
                params![
                    c.id,
                    c.name,
                    c.description,
                    c.profile_id,
                    c.host_group,
                    c.registration_allowed,
                    c.communication_enabled,
                    c.client_locked,
                    c.system_locked,
                    c.hw_signature,
                    c.cert_serial,
                    c.cert_fingerprint,
                    c.cert_not_after,
                    c.cert_duration,
                    c.reported_health,
                    c.reported_version,
                    c.reported_status,
                    c.created,
                    c.updated
                ],
            )?;
            Ok(())
        })
    }

    fn client_list(&self) -> StoreResult<Vec<Client>> {
        self.all(
            &format!("SELECT {CLIENT_COLS} FROM clients ORDER BY created, rowid"),
            [],
            client_row,
        )
    }

    fn client_get(&self, r: &str) -> StoreResult<Option<Client>> {
        self.one(
            &format!("SELECT {CLIENT_COLS} FROM clients WHERE id = ?1 OR name = ?1 ORDER BY id = ?1 DESC LIMIT 1"),
            [r],
            client_row,
        )
    }

    fn client_by_fingerprint(&self, fp: &str) -> StoreResult<Option<Client>> {
        self.one(
            &format!("SELECT {CLIENT_COLS} FROM clients WHERE cert_fingerprint = ?1"),
            [fp],
            client_row,
        )
    }

    fn client_update(&self, c: &Client) -> StoreResult<()> {
        self.change(
            "UPDATE clients SET description = ?2, registration_allowed = ?3,
             communication_enabled = ?4, client_locked = ?5, system_locked = ?6,
             updated = ?7 WHERE id = ?1",
            params![
                c.id,
                c.description,
                c.registration_allowed,
                c.communication_enabled,
                c.client_locked,
                c.system_locked,
                c.updated
            ],
            "client",
        )
    }

    fn client_set_cert(
        &self,
        id: &str,
        serial: &str,
        fp: &str,
        na: i64,
        now: i64,
    ) -> StoreResult<()> {
        self.change(
            "UPDATE clients SET cert_serial = ?2, cert_fingerprint = ?3,
             cert_not_after = ?4, updated = ?5 WHERE id = ?1",
            params![id, serial, fp, na, now],
            "client",
        )
    }

    fn client_set_status(
        &self,
        id: &str,
        status: &str,
        health: Option<&str>,
        version: Option<&str>,
        now: i64,
    ) -> StoreResult<()> {
        self.change(
            "UPDATE clients SET reported_status = ?2,
             reported_health = COALESCE(?3, reported_health),
             reported_version = COALESCE(?4, reported_version), updated = ?5
             WHERE id = ?1",
            params![id, status, health, version, now],
            "client",
        )
    }

    fn client_delete(&self, id: &str) -> StoreResult<()> {
        self.tx(|tx| {
            // Explicit, though the foreign key cascades too.
            exec(tx, "DELETE FROM client_escrow WHERE client_id = ?1", [id])?;
            exec_changed(tx, "DELETE FROM clients WHERE id = ?1", [id], "client")
        })?;
        // Move the erased escrow out of the WAL into the (secure_delete) main file.
        self.checkpoint("client delete");
        Ok(())
    }

    fn escrow_put(&self, client_id: &str, sealed: &[u8], now: i64) -> StoreResult<()> {
        let replaced = self.tx(|tx| {
            let exists: bool = scalar(
                tx,
                "SELECT EXISTS(SELECT 1 FROM clients WHERE id = ?1)",
                [client_id],
            )?;
            if !exists {
                return Err(StoreError::NotFound("client not found".into()));
            }
            let n = exec(
                tx,
                "UPDATE client_escrow SET sealed = ?2, updated = ?3 WHERE client_id = ?1",
                params![client_id, sealed, now],
            )?;
            if n == 0 {
                exec(
                    tx,
                    "INSERT INTO client_escrow (client_id, sealed, updated) VALUES (?1, ?2, ?3)",
                    params![client_id, sealed, now],
                )?;
            }
            Ok(n > 0)
        })?;
        if replaced {
            self.checkpoint("escrow replacement");
        }
        Ok(())
    }

    fn escrow_get(&self, client_id: &str) -> StoreResult<Option<Vec<u8>>> {
        self.one(
            "SELECT sealed FROM client_escrow WHERE client_id = ?1",
            [client_id],
            |r| r.get(0),
        )
    }

    fn audit_append(&self, client_id: &str, lines: &[String], now: i64) -> StoreResult<()> {
        self.tx(|tx| {
            let mut st = tx
                .prepare_cached("INSERT INTO audit (client_id, received, line) VALUES (?1, ?2, ?3)")
                .map_err(be)?;
            for l in lines {
                st.execute(params![client_id, now, l]).map_err(be)?;
            }
            Ok(())
        })
    }

    fn audit_count(&self, client_id: &str) -> StoreResult<i64> {
        scalar(
            &*self.lock()?,
            "SELECT COUNT(*) FROM audit WHERE client_id = ?1",
            [client_id],
        )
    }

    fn guardpoints_insert(&self, gps: &[GuardPoint]) -> StoreResult<()> {
        self.tx(|tx| {
            for g in gps {
                tx.execute(
                    "INSERT INTO guardpoints (id, client_id, guard_path, guard_point_type,
                     policy_id, guard_enabled, created) VALUES (?1,?2,?3,?4,?5,?6,?7)",
                    params![
                        g.id,
                        g.client_id,
                        g.guard_path,
                        g.guard_point_type,
                        g.policy_id,
                        g.guard_enabled,
                        g.created
                    ],
                )
                .map_err(conflict(|| {
                    format!(
                        "GuardPoint {:?} already exists on this client",
                        g.guard_path
                    )
                }))?;
            }
            Ok(())
        })
    }

    fn guardpoints_of(&self, client_id: &str) -> StoreResult<Vec<GuardPoint>> {
        self.all(
            &format!("{GP_SELECT} WHERE g.client_id = ?1 ORDER BY g.created, g.rowid"),
            [client_id],
            gp_row,
        )
    }

    fn guardpoint_delete(&self, client_id: &str, gp_id: &str) -> StoreResult<()> {
        self.change(
            "DELETE FROM guardpoints WHERE client_id = ?1 AND id = ?2",
            [client_id, gp_id],
            "GuardPoint",
        )
    }

    fn rule_insert(&self, r: &TeRule) -> StoreResult<()> {
        self.tx(|tx| {
            tx.execute(
                &format!("INSERT INTO te_rules ({RULE_COLS}) VALUES (?1,?2,?3,?4)"),
                params![r.id, r.name, r.json, r.created],
            )
            .map_err(conflict(|| {
                format!("a rule named {:?} already exists", r.name)
            }))?;
            Ok(())
        })
    }

    fn rule_list(&self) -> StoreResult<Vec<TeRule>> {
        self.all(
            &format!("SELECT {RULE_COLS} FROM te_rules ORDER BY created, rowid"),
            [],
            rule_row,
        )
    }

    fn rule_get(&self, r: &str) -> StoreResult<Option<TeRule>> {
        self.one(
            &format!(
                "SELECT {RULE_COLS} FROM te_rules WHERE id = ?1 OR name = ?1 ORDER BY id = ?1 DESC LIMIT 1"
            ),
            [r],
            rule_row,
        )
    }

    fn rule_delete(&self, id: &str) -> StoreResult<()> {
        self.tx(|tx| {
            let linked: bool = scalar(
                tx,
                "SELECT EXISTS(SELECT 1 FROM client_rules WHERE rule_id = ?1)",
                [id],
            )?;
            if linked {
                return Err(StoreError::Conflict(
                    "the rule is applied to a client; remove it from the client first".into(),
                ));
            }
            exec_changed(tx, "DELETE FROM te_rules WHERE id = ?1", [id], "rule")
        })
    }

    fn client_rule_put(&self, cr: &ClientRule) -> StoreResult<i64> {
        self.tx(|tx| {
            exec(
                tx,
                "INSERT INTO client_rules (client_id, rule_id, key, operation, shallow, generation, updated)
                 VALUES (?1,?2,?3,?4,?5,1,?6)
                 ON CONFLICT (client_id, rule_id) DO UPDATE SET key = excluded.key,
                   operation = excluded.operation, shallow = excluded.shallow,
                   generation = client_rules.generation + 1, updated = excluded.updated",
                params![cr.client_id, cr.rule_id, cr.key, cr.operation, cr.shallow, cr.updated],
            )?;
            scalar(
                tx,
                "SELECT generation FROM client_rules WHERE client_id = ?1 AND rule_id = ?2",
                [&cr.client_id, &cr.rule_id],
            )
        })
    }

    fn client_rules_of(&self, client_id: &str) -> StoreResult<Vec<ClientRule>> {
        self.all(
            &format!("{CLIENT_RULE_SELECT} WHERE c.client_id = ?1 ORDER BY r.created, r.rowid"),
            [client_id],
            client_rule_row,
        )
    }

    fn client_rule_delete(&self, client_id: &str, rule_id: &str) -> StoreResult<()> {
        self.change(
            "DELETE FROM client_rules WHERE client_id = ?1 AND rule_id = ?2",
            [client_id, rule_id],
            "client rule",
        )
    }

    fn policy_insert(&self, p: &Policy, set_ids: &[String]) -> StoreResult<()> {
        self.tx(|tx| {
            tx.execute(
                "INSERT INTO policies (id, name, json, created, updated) VALUES (?1,?2,?3,?4,?5)",
                params![p.id, p.name, p.json, p.created, p.updated],
            )
            .map_err(conflict(|| {
                format!("a policy named {:?} already exists", p.name)
            }))?;
            set_refs_put(tx, &p.id, set_ids)
        })
    }

    fn policy_update(&self, id: &str, json: &str, now: i64, set_ids: &[String]) -> StoreResult<()> {
        self.tx(|tx| {
            exec_changed(
                tx,
                "UPDATE policies SET json = ?2, updated = ?3 WHERE id = ?1",
                params![id, json, now],
                "policy",
            )?;
            set_refs_put(tx, id, set_ids)
        })
    }

    fn profile_insert(&self, p: &Profile) -> StoreResult<()> {
        self.write(
            &format!(
                "INSERT INTO client_profiles ({PROFILE_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8)"
            ),
            params![
                p.id,
                p.name,
                p.description,
                p.concise_logging,
                p.learn_mode_allowed,
                p.poll_interval,
                p.created,
                p.updated
            ],
            conflict(|| format!("a profile named {:?} already exists", p.name)),
        )
    }

    fn profile_list(&self) -> StoreResult<Vec<Profile>> {
        self.all(
            &format!("SELECT {PROFILE_COLS} FROM client_profiles ORDER BY created, rowid"),
            [],
            profile_row,
        )
    }

    fn profile_get(&self, r: &str) -> StoreResult<Option<Profile>> {
        self.one(
            &format!(
                "SELECT {PROFILE_COLS} FROM client_profiles WHERE id = ?1 OR name = ?1 \
                 ORDER BY id = ?1 DESC LIMIT 1"
            ),
            [r],
            profile_row,
        )
    }

    fn profile_update(&self, p: &Profile) -> StoreResult<()> {
        self.change(
            "UPDATE client_profiles SET description = ?2, concise_logging = ?3,
             learn_mode_allowed = ?4, poll_interval = ?5, updated = ?6 WHERE id = ?1",
            params![
                p.id,
                p.description,
                p.concise_logging,
                p.learn_mode_allowed,
                p.poll_interval,
                p.updated
            ],
            "profile",
        )
    }

    fn profile_delete(&self, id: &str) -> StoreResult<()> {
        self.tx(|tx| {
            let name: String = opt_row(
                tx,
                "SELECT name FROM client_profiles WHERE id = ?1",
                [id],
                |r| r.get(0),
            )?
            .ok_or_else(|| StoreError::NotFound("profile not found".into()))?;
            if name == DEFAULT_PROFILE {
                return Err(StoreError::Conflict(format!(
                    "{DEFAULT_PROFILE} cannot be deleted"
                )));
            }
            let used: i64 = scalar(
                tx,
                "SELECT COUNT(*) FROM clients WHERE profile_id = ?1",
                [id],
            )?;
            if used > 0 {
                return Err(StoreError::Conflict(format!(
                    "profile is used by {used} client(s)"
                )));
            }
            exec_changed(
                tx,
                "DELETE FROM client_profiles WHERE id = ?1",
                [id],
                "profile",
            )
        })
    }

    fn set_insert(&self, s: &PolicySet) -> StoreResult<()> {
        self.write(
            &format!("INSERT INTO policy_sets ({SET_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7)"),
            params![
                s.id,
                s.kind,
                s.name,
                s.description,
                s.entries,
                s.created,
                s.updated
            ],
            conflict(|| format!("a {} set named {:?} already exists", s.kind, s.name)),
        )
    }

    fn set_list(&self, kind: &str) -> StoreResult<Vec<PolicySet>> {
        self.all(
            &format!("SELECT {SET_COLS} FROM policy_sets WHERE kind = ?1 ORDER BY created, rowid"),
            [kind],
            set_row,
        )
    }

    fn set_get(&self, kind: &str, r: &str) -> StoreResult<Option<PolicySet>> {
        self.one(
            &format!(
                "SELECT {SET_COLS} FROM policy_sets WHERE kind = ?1 AND (id = ?2 OR name = ?2) \
                 ORDER BY id = ?2 DESC LIMIT 1"
            ),
            [kind, r],
            set_row,
        )
    }

    fn set_policies(&self, set_id: &str) -> StoreResult<Vec<Policy>> {
        self.all(
            "SELECT p.id, p.name, p.json, p.created, p.updated FROM policies p
             JOIN policy_set_refs r ON r.policy_id = p.id
             WHERE r.set_id = ?1 ORDER BY p.created, p.rowid",
            [set_id],
            policy_row,
        )
    }

    fn set_update(&self, s: &PolicySet, rewrites: &[(String, String)]) -> StoreResult<()> {
        self.tx(|tx| {
            exec_changed(
                tx,
                "UPDATE policy_sets SET description = ?2, entries = ?3, updated = ?4
                 WHERE id = ?1",
                params![s.id, s.description, s.entries, s.updated],
                "policy set",
            )?;
            for (pid, json) in rewrites {
                exec_changed(
                    tx,
                    "UPDATE policies SET json = ?2, updated = ?3 WHERE id = ?1",
                    params![pid, json, s.updated],
                    "policy",
                )?;
            }
            Ok(())
        })
    }

    fn set_delete(&self, id: &str) -> StoreResult<()> {
        self.tx(|tx| {
            let users: Vec<String> = rows(
                tx,
                "SELECT p.name FROM policies p JOIN policy_set_refs r
                 ON r.policy_id = p.id WHERE r.set_id = ?1 ORDER BY p.name",
                [id],
                |r| r.get(0),
            )?;
            if !users.is_empty() {
                return Err(StoreError::Conflict(format!(
                    "set is used by policies: {}",
                    users.join(", ")
                )));
            }
            exec_changed(
                tx,
                "DELETE FROM policy_sets WHERE id = ?1",
                [id],
                "policy set",
            )
        })
    }

    fn policy_list(&self) -> StoreResult<Vec<Policy>> {
        self.all(
            "SELECT id, name, json, created, updated FROM policies ORDER BY created, rowid",
            [],
            policy_row,
        )
    }

    fn policy_get(&self, r: &str) -> StoreResult<Option<Policy>> {
        self.one(
            "SELECT id, name, json, created, updated FROM policies
             WHERE id = ?1 OR name = ?1 ORDER BY id = ?1 DESC LIMIT 1",
            [r],
            policy_row,
        )
    }

    fn policy_delete(&self, id: &str) -> StoreResult<()> {
        self.tx(|tx| {
            let used: i64 = scalar(
                tx,
                "SELECT COUNT(*) FROM guardpoints WHERE policy_id = ?1",
                [id],
            )?;
            if used > 0 {
                return Err(StoreError::Conflict(format!(
                    "policy is used by {used} GuardPoint(s)"
                )));
            }
            exec_changed(tx, "DELETE FROM policies WHERE id = ?1", [id], "policy")
        })
    }

    fn key_insert(&self, k: &Key, seal: &mut Sealer<'_>) -> StoreResult<()> {
        self.tx(|tx| {
            tx.execute(
                &format!("INSERT INTO keys ({KEY_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)"),
                params![
                    k.id,
                    k.name,
                    k.algorithm,
                    k.size,
                    k.persistent_on_client,
                    k.encryption_mode,
                    k.cte_versioned,
                    k.state,
                    k.created,
                    k.updated
                ],
            )
            .map_err(conflict(|| {
                format!("a key named {:?} already exists", k.name)
            }))?;
            let sealed = seal(1)?;
            exec(
                tx,
                "INSERT INTO key_versions (key_id, version, sealed, created) VALUES (?1, 1, ?2, ?3)",
                params![k.id, sealed, k.created],
            )?;
            Ok(())
        })
    }

    fn key_list(&self) -> StoreResult<Vec<Key>> {
        let conn = self.lock()?;
        let mut keys = rows(
            &conn,
            &format!("SELECT {KEY_COLS} FROM keys ORDER BY created, rowid"),
            [],
            key_row,
        )?;
        for k in &mut keys {
            key_versions(&conn, k)?;
        }
        Ok(keys)
    }

    fn key_get(&self, r: &str) -> StoreResult<Option<Key>> {
        let conn = self.lock()?;
        let key = opt_row(
            &conn,
            &format!(
                "SELECT {KEY_COLS} FROM keys WHERE id = ?1 OR name = ?1 ORDER BY id = ?1 DESC LIMIT 1"
            ),
            [r],
            key_row,
        )?;
        key.map(|mut k| key_versions(&conn, &mut k).map(|()| k))
            .transpose()
    }

    fn key_add_version(&self, id: &str, now: i64, seal: &mut Sealer<'_>) -> StoreResult<u32> {
        self.tx(|tx| {
            let state = key_state(tx, id)?;
            if state != "active" {
                return Err(StoreError::Conflict(format!(
                    "key is {state}; cannot rotate"
                )));
            }
            let latest: u32 = scalar(
                tx,
                "SELECT COALESCE(MAX(version), 0) FROM key_versions WHERE key_id = ?1",
                [id],
            )?;
            let v = latest
                .checked_add(1)
                .ok_or_else(|| StoreError::Conflict("too many versions".into()))?;
            let sealed = seal(v)?;
            exec(
                tx,
                "INSERT INTO key_versions (key_id, version, sealed, created) VALUES (?1,?2,?3,?4)",
                params![id, v, sealed, now],
            )?;
            exec(
                tx,
                "UPDATE keys SET updated = ?2 WHERE id = ?1",
                params![id, now],
            )?;
            Ok(v)
        })
    }

    fn key_revoke(&self, id: &str, now: i64) -> StoreResult<()> {
        self.tx(|tx| {
            match key_state(tx, id)?.as_str() {
                "active" => {
                    exec(
                        tx,
                        "UPDATE keys SET state = 'revoked', updated = ?2 WHERE id = ?1",
                        params![id, now],
                    )?;
                }
                "revoked" => {}
                other => return Err(StoreError::Conflict(format!("key is {other}"))),
            }
            Ok(())
        })
    }

    fn key_destroy(&self, id: &str, now: i64) -> StoreResult<()> {
        self.tx(|tx| {
            key_state(tx, id)?;
            exec(
                tx,
                "UPDATE keys SET state = 'destroyed', updated = ?2 WHERE id = ?1",
                params![id, now],
            )?;
            exec(
                tx,
                "UPDATE key_versions SET sealed = NULL WHERE key_id = ?1",
                [id],
            )?;
            Ok(())
        })?;
        // Move the erased pages out of the WAL into the (secure_delete) main file.
        self.checkpoint("key destroy");
        Ok(())
    }

    fn key_version_sealed(&self, id: &str, version: u32) -> StoreResult<Option<Vec<u8>>> {
        self.one(
            "SELECT sealed FROM key_versions WHERE key_id = ?1 AND version = ?2",
            params![id, version],
            |r| r.get::<_, Option<Vec<u8>>>(0),
        )?
        .ok_or_else(|| StoreError::NotFound("key version not found".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_once_and_keys_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        {
            let s = SqliteStore::open(&path).unwrap();
            assert_eq!(s.schema_version().unwrap(), 4);
            let k = Key {
                id: "k1".into(),
                name: "db-key".into(),
                algorithm: "AES".into(),
                size: 256,
                persistent_on_client: true,
                encryption_mode: "XTS".into(),
                cte_versioned: true,
                state: "active".into(),
                created: 1,
                updated: 1,
                versions: vec![],
            };
            s.key_insert(&k, &mut |v| Ok(vec![u8::try_from(v).unwrap(); 4]))
                .unwrap();
            let dup = s.key_insert(&k, &mut |_| Ok(vec![]));
            assert!(matches!(dup, Err(StoreError::Conflict(_))));
            assert_eq!(
                s.key_add_version("k1", 2, &mut |v| Ok(vec![v as u8]))
                    .unwrap(),
                2
            );
            s.key_revoke("k1", 3).unwrap();
            assert!(matches!(
                s.key_add_version("k1", 4, &mut |_| Ok(vec![])),
                Err(StoreError::Conflict(_))
            ));
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), 4);
        let k = s.key_get("db-key").unwrap().unwrap();
        assert_eq!(k.versions, vec![1, 2]);
        assert_eq!(k.state, "revoked");
        assert_eq!(
            s.key_version_sealed("k1", 1).unwrap(),
            Some(vec![1, 1, 1, 1])
        );
        s.key_destroy("k1", 5).unwrap();
        assert_eq!(s.key_version_sealed("k1", 1).unwrap(), None);
    }

    fn client(id: &str, name: &str) -> Client {
        Client {
            id: id.into(),
            name: name.into(),
            description: String::new(),
            profile_id: "00000000-0000-4000-8000-000000000001".into(),
            host_group: String::new(),
            registration_allowed: true,
            communication_enabled: true,
            client_locked: false,
            system_locked: false,
            hw_signature: String::new(),
            cert_serial: format!("serial-{id}"),
            cert_fingerprint: format!("fp-{id}"),
            cert_not_after: 100,
            cert_duration: 1,
            reported_health: None,
            reported_version: None,
            reported_status: None,
            created: 1,
            updated: 1,
        }
    }

    /// A database as a keymgr that knew only the first `version`
    /// migrations left it.
    fn database_at_version(path: &Path, version: usize) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.execute_batch(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied INTEGER NOT NULL);",
        )
        .unwrap();
        for (i, m) in MIGRATIONS[..version].iter().enumerate() {
            conn.execute_batch(m).unwrap();
            conn.execute("INSERT INTO schema_migrations VALUES (?1, 0)", [i + 1])
                .unwrap();
        }
        conn
    }

    #[test]
    fn escrow_migrates_replaces_and_cascades() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        // A database made by a keymgr that knew only migration 1.
        drop(database_at_version(&path, 1));
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), 4);
        s.regtoken_insert(&RegToken {
            id: "t".into(),
            token: "tok".into(),
            lifetime: 1000,
            max_clients: 5,
            used: 0,
            cert_duration: 1,
            name_prefix: String::new(),
            created: 1,
        })
        .unwrap();
        s.register_client("tok", 2, &client("c1", "one")).unwrap();
        s.register_client("tok", 2, &client("c2", "two")).unwrap();
        assert_eq!(s.escrow_get("c1").unwrap(), None);
        assert!(matches!(
            s.escrow_put("nobody", &[1], 3),
            Err(StoreError::NotFound(_))
        ));
        s.escrow_put("c1", &[1, 2, 3], 3).unwrap();
        s.escrow_put("c2", &[9], 3).unwrap();
        s.escrow_put("c1", &[4, 5], 4).unwrap();
        assert_eq!(s.escrow_get("c1").unwrap(), Some(vec![4, 5]));
        s.client_delete("c1").unwrap();
        assert_eq!(s.escrow_get("c1").unwrap(), None);
        assert_eq!(s.escrow_get("c2").unwrap(), Some(vec![9]));
        let n: i64 = s
            .lock()
            .unwrap()
            .query_row("SELECT COUNT(*) FROM client_escrow", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn profiles_migrate_existing_clients() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.db");
        // A database made by a keymgr that knew migrations 1 and 2, whose
        // clients carry profile names.
        {
            let conn = database_at_version(&path, 2);
            for (id, profile) in [("c1", DEFAULT_PROFILE), ("c2", "whatever")] {
                conn.execute(
                    "INSERT INTO clients VALUES (?1, ?1, '', ?2, '', 1, 1, 0, 0, '', 's', ?1, 1, 1,
                     NULL, NULL, NULL, 1, 1)",
                    [id, profile],
                )
                .unwrap();
            }
        }
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), 4);
        let def = s.profile_get(DEFAULT_PROFILE).unwrap().unwrap();
        assert_eq!(def.poll_interval, 10);
        for id in ["c1", "c2"] {
            assert_eq!(s.client_get(id).unwrap().unwrap().profile_id, def.id);
        }
        assert!(matches!(
            s.profile_delete(&def.id),
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(s.profile_list().unwrap().len(), 1);
    }
}
