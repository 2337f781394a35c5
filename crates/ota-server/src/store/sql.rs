//! [`Store`] on sqlx: one SQL text for SQLite and PostgreSQL (`$n` placeholders work in both),
//! runtime queries only.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection};

use super::{AssignmentChange, PackageQuery, Page, Store, StoreError};
use crate::error::RuleError;
use crate::model::{
    Device, DeviceId, DeviceProfile, DeviceUpdateState, EnigmaAddress, Millis, OtaPackage,
    PackageData, PackageId, PackageSource, PackageType, PackageUrl, ProfileId,
};
use crate::rules;
use ota_core::checksum::ChecksumAlgorithm;

/// Schema migrations, applied in order at start; each runs once (recorded in
/// `ota_schema_version`). The SQL is portable between SQLite and PostgreSQL.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r"
CREATE TABLE device_profiles (
    id TEXT PRIMARY KEY,
    created_time BIGINT NOT NULL,
    name TEXT NOT NULL UNIQUE,
    firmware_id TEXT,
    software_id TEXT
);
CREATE TABLE ota_packages (
    id TEXT PRIMARY KEY,
    created_time BIGINT NOT NULL,
    device_profile_id TEXT NOT NULL REFERENCES device_profiles(id),
    package_type TEXT NOT NULL,
    title TEXT NOT NULL,
    version TEXT NOT NULL,
    tag TEXT,
    url TEXT,
    file_name TEXT,
    content_type TEXT,
    checksum_algorithm TEXT,
    checksum TEXT,
    data_size BIGINT,
    blob_key TEXT,
    sming_app_id TEXT,
    additional_info TEXT,
    UNIQUE (device_profile_id, package_type, title, version)
);
CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    created_time BIGINT NOT NULL,
    name TEXT NOT NULL UNIQUE,
    device_profile_id TEXT NOT NULL REFERENCES device_profiles(id),
    access_token TEXT NOT NULL UNIQUE,
    firmware_id TEXT,
    software_id TEXT,
    enigma_network TEXT,
    enigma_node TEXT
);
CREATE INDEX devices_profile ON devices (device_profile_id);
CREATE TABLE device_update_states (
    device_id TEXT NOT NULL,
    package_type TEXT NOT NULL,
    current_title TEXT,
    current_version TEXT,
    target_package_id TEXT,
    target_title TEXT,
    target_version TEXT,
    state TEXT,
    error TEXT,
    progress BIGINT NOT NULL,
    state_time BIGINT NOT NULL,
    anomalies BIGINT NOT NULL,
    PRIMARY KEY (device_id, package_type)
);
",
    ),
    (
        2,
        r"
CREATE TABLE device_client_attributes (
    device_id TEXT NOT NULL REFERENCES devices(id),
    attr_key TEXT NOT NULL,
    json_value TEXT NOT NULL,
    last_update_ts BIGINT NOT NULL,
    PRIMARY KEY (device_id, attr_key)
);
",
    ),
];

/// `format!` for SQL text built only from constants of this module (column lists, lock
/// clauses, numbered placeholders): never from user input, which is always bound.
macro_rules! sqlf {
    ($($t:tt)*) => { sqlx::AssertSqlSafe(format!($($t)*)) };
}

enum Backend {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The SQL store: SQLite (one file, WAL) or PostgreSQL.
pub struct SqlStore {
    backend: Backend,
    // SQLite allows one writer: serialising write transactions here avoids SQLITE_BUSY on
    // upgrade from a read to a write lock.
    write_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.backend {
            Backend::Sqlite(_) => "SqlStore(SQLite)",
            Backend::Postgres(_) => "SqlStore(PostgreSQL)",
        })
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

fn valid_schema_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl SqlStore {
    /// Opens `sqlite://path` (created if missing) or `postgres://…`, and migrates.
    ///
    /// A PostgreSQL URL may carry `?schema=name` (lower-case letters, digits, `_`): the schema
    /// is created if needed and used for every table (tests use one schema each).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Self::sqlite(url).await
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::postgres(url).await
        } else {
            Err(StoreError::UnsupportedUrl {
                url: url.to_owned(),
            })
        }
    }

    async fn sqlite(url: &str) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        let store = Self {
            backend: Backend::Sqlite(pool),
            write_lock: tokio::sync::Mutex::new(()),
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn postgres(url: &str) -> Result<Self, StoreError> {
        let mut parsed = url::Url::parse(url).map_err(|_| StoreError::UnsupportedUrl {
            url: url.to_owned(),
        })?;
        let schema: Option<String> = parsed
            .query_pairs()
            .find(|(k, _)| k == "schema")
            .map(|(_, v)| v.into_owned());
        let rest: Vec<(String, String)> = parsed
            .query_pairs()
            .filter(|(k, _)| k != "schema")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(rest);
        let base = parsed.as_str().trim_end_matches('?').to_owned();
        let mut opts = PgConnectOptions::from_str(&base)?;
        if let Some(schema) = &schema {
            if !valid_schema_name(schema) {
                return Err(StoreError::UnsupportedUrl {
                    url: url.to_owned(),
                });
            }
            let mut conn = opts.connect().await?;
            sqlx::raw_sql(sqlf!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                .execute(&mut conn)
                .await?;
            conn.close().await?;
            opts = opts.options([("search_path", schema.as_str())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect_with(opts)
            .await?;
        let store = Self {
            backend: Backend::Postgres(pool),
            write_lock: tokio::sync::Mutex::new(()),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// The PostgreSQL pool (for LISTEN/NOTIFY), if this store is on PostgreSQL.
    pub fn pg_pool(&self) -> Option<&PgPool> {
        match &self.backend {
            Backend::Postgres(p) => Some(p),
            Backend::Sqlite(_) => None,
        }
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        macro_rules! run {
            ($pool:expr, $lock:expr) => {{
                let mut tx = $pool.begin_write().await?;
                if let Some(lock) = $lock {
                    sqlx::raw_sql(lock).execute(&mut *tx).await?;
                }
                sqlx::raw_sql(
                    "CREATE TABLE IF NOT EXISTS ota_schema_version (version BIGINT PRIMARY KEY)",
                )
                .execute(&mut *tx)
                .await?;
                let done: Vec<(i64,)> = sqlx::query_as("SELECT version FROM ota_schema_version")
                    .fetch_all(&mut *tx)
                    .await?;
                for (version, sql) in MIGRATIONS {
                    if done.iter().any(|(v,)| v == version) {
                        continue;
                    }
                    sqlx::raw_sql(*sql).execute(&mut *tx).await?;
                    sqlx::query("INSERT INTO ota_schema_version (version) VALUES ($1)")
                        .bind(version)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }};
        }
        match &self.backend {
            Backend::Sqlite(p) => {
                let _w = self.write_lock.lock().await;
                run!(p, None::<&str>);
            }
            // Replicas starting together: one migrates, the others wait and find it done.
            Backend::Postgres(p) => run!(p, Some("SELECT pg_advisory_xact_lock(74100001)")),
        }
        Ok(())
    }

    fn lock_clause(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "",
            Backend::Postgres(_) => " FOR UPDATE",
        }
    }

    fn share_clause(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "",
            Backend::Postgres(_) => " FOR SHARE",
        }
    }
}

/// Starts a write transaction. On SQLite it is `BEGIN IMMEDIATE`: a deferred transaction that
/// reads first and writes later can fail its lock upgrade with `SQLITE_BUSY` ("database is
/// locked") without waiting, while a rollback of an earlier dropped transaction is still in
/// flight on another pooled connection; taking the write lock up front makes it wait for the
/// busy timeout instead.
trait BeginWrite {
    type Db: sqlx::Database;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>;
}

impl BeginWrite for SqlitePool {
    type Db = sqlx::Sqlite;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, sqlx::Error> {
        self.begin_with("BEGIN IMMEDIATE").await
    }
}

impl BeginWrite for PgPool {
    type Db = sqlx::Postgres;
    async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        self.begin().await
    }
}

/// Runs `$body` with `$pool` bound to the backend's pool; write transactions on SQLite are
/// serialised.
macro_rules! with_pool {
    (write $self:ident, |$pool:ident| $body:expr) => {
        match &$self.backend {
            Backend::Sqlite($pool) => {
                let _w = $self.write_lock.lock().await;
                $body
            }
            Backend::Postgres($pool) => $body,
        }
    };
    (read $self:ident, |$pool:ident| $body:expr) => {
        match &$self.backend {
            Backend::Sqlite($pool) => $body,
            Backend::Postgres($pool) => $body,
        }
    };
}

const PROFILE_COLS: &str = "id, created_time, name, firmware_id, software_id";
const DEVICE_COLS: &str = "id, created_time, name, device_profile_id, access_token, firmware_id, software_id, enigma_network, enigma_node";
const PACKAGE_COLS: &str = "id, created_time, device_profile_id, package_type, title, version, tag, url, file_name, \
     content_type, checksum_algorithm, checksum, data_size, blob_key, sming_app_id, additional_info";
const STATE_COLS: &str = "device_id, package_type, current_title, current_version, target_package_id, target_title, \
     target_version, state, error, progress, state_time, anomalies";

#[derive(sqlx::FromRow)]
struct ProfileRow {
    id: String,
    created_time: i64,
    name: String,
    firmware_id: Option<String>,
    software_id: Option<String>,
}

#[derive(sqlx::FromRow)]
struct DeviceRow {
    id: String,
    created_time: i64,
    name: String,
    device_profile_id: String,
    access_token: String,
    firmware_id: Option<String>,
    software_id: Option<String>,
    enigma_network: Option<String>,
    enigma_node: Option<String>,
}

#[derive(sqlx::FromRow)]
struct PackageRow {
    id: String,
    created_time: i64,
    device_profile_id: String,
    package_type: String,
    title: String,
    version: String,
    tag: Option<String>,
    url: Option<String>,
    file_name: Option<String>,
    content_type: Option<String>,
    checksum_algorithm: Option<String>,
    checksum: Option<String>,
    data_size: Option<i64>,
    blob_key: Option<String>,
    sming_app_id: Option<String>,
    additional_info: Option<String>,
}

#[derive(sqlx::FromRow)]
struct StateRow {
    device_id: String,
    package_type: String,
    current_title: Option<String>,
    current_version: Option<String>,
    target_package_id: Option<String>,
    target_title: Option<String>,
    target_version: Option<String>,
    state: Option<String>,
    error: Option<String>,
    progress: i64,
    state_time: i64,
    anomalies: i64,
}

fn corrupt(what: &'static str) -> impl Fn(String) -> StoreError {
    move |detail| StoreError::Corrupt { what, detail }
}

fn parse<T: FromStr>(what: &'static str, s: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e: T::Err| corrupt(what)(e.to_string()))
}

fn parse_opt<T: FromStr>(what: &'static str, s: Option<&str>) -> Result<Option<T>, StoreError>
where
    T::Err: std::fmt::Display,
{
    s.map(|s| parse(what, s)).transpose()
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl ProfileRow {
    fn into_model(self) -> Result<DeviceProfile, StoreError> {
        const W: &str = "device profile";
        Ok(DeviceProfile {
            id: parse(W, &self.id)?,
            created_time: self.created_time,
            name: self.name,
            firmware_id: parse_opt(W, self.firmware_id.as_deref())?,
            software_id: parse_opt(W, self.software_id.as_deref())?,
        })
    }
}

impl DeviceRow {
    fn into_model(self) -> Result<Device, StoreError> {
        const W: &str = "device";
        Ok(Device {
            id: parse(W, &self.id)?,
            created_time: self.created_time,
            name: self.name,
            profile_id: parse(W, &self.device_profile_id)?,
            access_token: self.access_token,
            firmware_id: parse_opt(W, self.firmware_id.as_deref())?,
            software_id: parse_opt(W, self.software_id.as_deref())?,
            enigma: match (self.enigma_network, self.enigma_node) {
                (Some(network), Some(node)) => Some(EnigmaAddress { network, node }),
                _ => None,
            },
        })
    }
}

impl PackageRow {
    fn into_model(self) -> Result<OtaPackage, StoreError> {
        const W: &str = "package";
        let alg = parse_opt(W, self.checksum_algorithm.as_deref())?;
        let source = match (self.blob_key, self.url) {
            (Some(blob_key), None) => PackageSource::Data(PackageData {
                blob_key,
                file_name: self.file_name.unwrap_or_default(),
                content_type: self.content_type.unwrap_or_default(),
                size: to_u64(self.data_size.unwrap_or(0)),
                checksum_algorithm: alg
                    .ok_or_else(|| corrupt(W)("data without checksum algorithm".into()))?,
                checksum: self.checksum.unwrap_or_default(),
            }),
            (None, Some(url)) => PackageSource::Url(PackageUrl {
                url,
                checksum_algorithm: alg,
                checksum: self.checksum,
            }),
            (None, None) => PackageSource::Pending,
            (Some(_), Some(_)) => return Err(corrupt(W)("both data and url".into())),
        };
        Ok(OtaPackage {
            id: parse(W, &self.id)?,
            created_time: self.created_time,
            profile_id: parse(W, &self.device_profile_id)?,
            package_type: parse(W, &self.package_type)?,
            title: self.title,
            version: self.version,
            tag: self.tag,
            source,
            sming_app_id: self.sming_app_id,
            additional_info: self
                .additional_info
                .as_deref()
                .map(serde_json::from_str)
                .transpose()
                .map_err(|e| corrupt(W)(e.to_string()))?,
        })
    }
}

impl StateRow {
    fn into_model(self) -> Result<DeviceUpdateState, StoreError> {
        const W: &str = "update state";
        Ok(DeviceUpdateState {
            device_id: parse(W, &self.device_id)?,
            package_type: parse(W, &self.package_type)?,
            current_title: self.current_title,
            current_version: self.current_version,
            target_package_id: parse_opt(W, self.target_package_id.as_deref())?,
            target_title: self.target_title,
            target_version: self.target_version,
            state: parse_opt(W, self.state.as_deref())?,
            error: self.error,
            progress: to_u64(self.progress),
            state_time: self.state_time,
            anomalies: to_u64(self.anomalies),
        })
    }
}

fn opt_id<T: ToString>(v: Option<T>) -> Option<String> {
    v.map(|v| v.to_string())
}

fn not_found(what: &'static str, id: impl std::fmt::Display) -> StoreError {
    StoreError::NotFound {
        what,
        id: id.to_string(),
    }
}

// Helpers shared by the methods, written as macros so one body serves both backends.

macro_rules! fetch_profile {
    ($ex:expr, $id:expr, $lock:expr) => {
        sqlx::query_as::<_, ProfileRow>(sqlf!(
            "SELECT {PROFILE_COLS} FROM device_profiles WHERE id = $1{}",
            $lock
        ))
        .bind($id.to_string())
        .fetch_optional($ex)
        .await?
        .map(ProfileRow::into_model)
        .transpose()?
        .ok_or_else(|| not_found("device profile", $id))
    };
}

macro_rules! fetch_package {
    ($ex:expr, $id:expr, $lock:expr) => {
        sqlx::query_as::<_, PackageRow>(sqlf!(
            "SELECT {PACKAGE_COLS} FROM ota_packages WHERE id = $1{}",
            $lock
        ))
        .bind($id.to_string())
        .fetch_optional($ex)
        .await?
        .map(PackageRow::into_model)
        .transpose()?
        .ok_or_else(|| not_found("package", $id))
    };
}

macro_rules! fetch_device {
    ($ex:expr, $id:expr, $lock:expr) => {
        sqlx::query_as::<_, DeviceRow>(sqlf!(
            "SELECT {DEVICE_COLS} FROM devices WHERE id = $1{}",
            $lock
        ))
        .bind($id.to_string())
        .fetch_optional($ex)
        .await?
        .map(DeviceRow::into_model)
        .transpose()?
        .ok_or_else(|| not_found("device", $id))
    };
}

macro_rules! fetch_state {
    ($ex:expr, $device:expr, $t:expr) => {
        match sqlx::query_as::<_, StateRow>(sqlf!(
            "SELECT {STATE_COLS} FROM device_update_states WHERE device_id = $1 AND package_type = $2"
        ))
        .bind($device.to_string())
        .bind($t.as_str())
        .fetch_optional($ex)
        .await?
        {
            Some(row) => row.into_model()?,
            None => DeviceUpdateState::empty($device, $t),
        }
    };
}

/// Binds the twelve state columns, in `STATE_COLS` order, as `$1`…`$12` of `$q`.
macro_rules! bind_state {
    ($q:expr, $s:expr) => {{
        let s: &DeviceUpdateState = $s;
        $q.bind(s.device_id.to_string())
            .bind(s.package_type.as_str())
            .bind(&s.current_title)
            .bind(&s.current_version)
            .bind(opt_id(s.target_package_id))
            .bind(&s.target_title)
            .bind(&s.target_version)
            .bind(s.state.map(crate::model::UpdateState::as_str))
            .bind(&s.error)
            .bind(to_i64(s.progress))
            .bind(s.state_time)
            .bind(to_i64(s.anomalies))
    }};
}

macro_rules! upsert_state {
    ($ex:expr, $s:expr) => {{
        bind_state!(
            sqlx::query(sqlf!(
                "INSERT INTO device_update_states ({STATE_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12) \
                 ON CONFLICT (device_id, package_type) DO UPDATE SET current_title = $3, current_version = $4, \
                 target_package_id = $5, target_title = $6, target_version = $7, state = $8, error = $9, \
                 progress = $10, state_time = $11, anomalies = $12"
            )),
            $s
        )
        .execute($ex)
        .await?;
    }};
}

/// Writes QUEUED (or withdrawn) states for the changes, inside the transaction `$tx`.
macro_rules! record_changes {
    ($self:ident, $tx:ident, $changes:expr, $now:expr) => {
        for c in $changes {
            let state = fetch_state!(&mut *$tx, c.device_id, c.package_type);
            let next = match c.new {
                Some(id) => {
                    let pkg: OtaPackage = fetch_package!(&mut *$tx, id, "")?;
                    rules::offer(&state, &pkg, $now)
                }
                None => rules::withdraw(&state, $now),
            };
            upsert_state!(&mut *$tx, &next);
        }
    };
}

/// Checks that each `Some` package may be assigned within `profile` (locking it against
/// deletion on PostgreSQL).
macro_rules! check_packages {
    ($self:ident, $tx:ident, $profile:expr, $pairs:expr) => {
        for (t, id) in $pairs {
            if let Some(id) = id {
                let pkg: OtaPackage = fetch_package!(&mut *$tx, id, $self.share_clause())?;
                rules::check_assignable($profile, t, &pkg)?;
            }
        }
    };
}

#[async_trait]
impl Store for SqlStore {
    async fn create_profile(&self, profile: &DeviceProfile) -> Result<(), StoreError> {
        with_pool!(write self, |pool| {
            let r = sqlx::query(sqlf!("INSERT INTO device_profiles ({PROFILE_COLS}) VALUES ($1, $2, $3, NULL, NULL)"))
                .bind(profile.id.to_string())
                .bind(profile.created_time)
                .bind(&profile.name)
                .execute(pool)
                .await;
            match r {
                Err(e) if is_unique_violation(&e) => {
                    Err(RuleError::NameTaken { what: "device profile name", value: profile.name.clone() }.into())
                }
                Err(e) => Err(e.into()),
                Ok(_) => Ok(()),
            }
        })
    }

    async fn profile(&self, id: ProfileId) -> Result<DeviceProfile, StoreError> {
        with_pool!(read self, |pool| fetch_profile!(pool, id, ""))
    }

    async fn profiles(&self) -> Result<Vec<DeviceProfile>, StoreError> {
        with_pool!(read self, |pool| {
            sqlx::query_as::<_, ProfileRow>(sqlf!("SELECT {PROFILE_COLS} FROM device_profiles ORDER BY name"))
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(ProfileRow::into_model)
                .collect()
        })
    }

    async fn set_profile_packages(
        &self,
        id: ProfileId,
        firmware: Option<PackageId>,
        software: Option<PackageId>,
        now: Millis,
    ) -> Result<Vec<AssignmentChange>, StoreError> {
        with_pool!(write self, |pool| {
            let mut tx = pool.begin_write().await?;
            let old: DeviceProfile = fetch_profile!(&mut *tx, id, self.lock_clause())?;
            check_packages!(self, tx, id, [(PackageType::Firmware, firmware), (PackageType::Software, software)]);
            sqlx::query("UPDATE device_profiles SET firmware_id = $2, software_id = $3 WHERE id = $1")
                .bind(id.to_string())
                .bind(opt_id(firmware))
                .bind(opt_id(software))
                .execute(&mut *tx)
                .await?;
            let mut changes = Vec::new();
            for (t, new) in [(PackageType::Firmware, firmware), (PackageType::Software, software)] {
                let before = old.package(t);
                if before == new {
                    continue;
                }
                let col = match t {
                    PackageType::Firmware => "firmware_id",
                    PackageType::Software => "software_id",
                };
                let ids: Vec<(String,)> =
                    sqlx::query_as(sqlf!("SELECT id FROM devices WHERE device_profile_id = $1 AND {col} IS NULL ORDER BY id"))
                        .bind(id.to_string())
                        .fetch_all(&mut *tx)
                        .await?;
                for (device,) in ids {
                    changes.push(AssignmentChange { device_id: parse("device", &device)?, package_type: t, old: before, new });
                }
            }
            record_changes!(self, tx, &changes, now);
            tx.commit().await?;
            Ok(changes)
        })
    }

    async fn create_device(
        &self,
        device: &Device,
        now: Millis,
    ) -> Result<Vec<AssignmentChange>, StoreError> {
        with_pool!(write self, |pool| {
            let mut tx = pool.begin_write().await?;
            let profile: DeviceProfile = fetch_profile!(&mut *tx, device.profile_id, self.share_clause())?;
            check_packages!(self, tx, device.profile_id, [(PackageType::Firmware, device.firmware_id), (PackageType::Software, device.software_id)]);
            let r = sqlx::query(sqlf!("INSERT INTO devices ({DEVICE_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)"))
                .bind(device.id.to_string())
                .bind(device.created_time)
                .bind(&device.name)
                .bind(device.profile_id.to_string())
                .bind(&device.access_token)
                .bind(opt_id(device.firmware_id))
                .bind(opt_id(device.software_id))
                .bind(device.enigma.as_ref().map(|e| e.network.clone()))
                .bind(device.enigma.as_ref().map(|e| e.node.clone()))
                .execute(&mut *tx)
                .await;
            match r {
                Err(e) if is_unique_violation(&e) => {
                    return Err(name_or_token_taken(&e, device));
                }
                r => {
                    r?;
                }
            }
            let changes: Vec<AssignmentChange> = PackageType::ALL
                .into_iter()
                .filter_map(|t| {
                    rules::effective_for(device, &profile, t)
                        .map(|new| AssignmentChange { device_id: device.id, package_type: t, old: None, new: Some(new) })
                })
                .collect();
            record_changes!(self, tx, &changes, now);
            tx.commit().await?;
            Ok(changes)
        })
    }

    async fn update_device(
        &self,
        device: &Device,
        now: Millis,
    ) -> Result<Vec<AssignmentChange>, StoreError> {
        with_pool!(write self, |pool| {
            let mut tx = pool.begin_write().await?;
            let old: Device = fetch_device!(&mut *tx, device.id, self.lock_clause())?;
            let old_profile: DeviceProfile = fetch_profile!(&mut *tx, old.profile_id, "")?;
            let profile: DeviceProfile = fetch_profile!(&mut *tx, device.profile_id, self.share_clause())?;
            check_packages!(self, tx, device.profile_id, [(PackageType::Firmware, device.firmware_id), (PackageType::Software, device.software_id)]);
            let r = sqlx::query(
                "UPDATE devices SET name = $2, device_profile_id = $3, firmware_id = $4, software_id = $5, \
                 enigma_network = $6, enigma_node = $7 WHERE id = $1",
            )
            .bind(device.id.to_string())
            .bind(&device.name)
            .bind(device.profile_id.to_string())
            .bind(opt_id(device.firmware_id))
            .bind(opt_id(device.software_id))
            .bind(device.enigma.as_ref().map(|e| e.network.clone()))
            .bind(device.enigma.as_ref().map(|e| e.node.clone()))
            .execute(&mut *tx)
            .await;
            match r {
                Err(e) if is_unique_violation(&e) => return Err(name_or_token_taken(&e, device)),
                r => {
                    r?;
                }
            }
            let changes: Vec<AssignmentChange> = PackageType::ALL
                .into_iter()
                .filter_map(|t| {
                    let before = rules::effective_for(&old, &old_profile, t);
                    let after = rules::effective_for(device, &profile, t);
                    (before != after).then_some(AssignmentChange { device_id: device.id, package_type: t, old: before, new: after })
                })
                .collect();
            record_changes!(self, tx, &changes, now);
            tx.commit().await?;
            Ok(changes)
        })
    }

    async fn set_device_token(&self, id: DeviceId, token: &str) -> Result<(), StoreError> {
        with_pool!(write self, |pool| {
            let r = sqlx::query("UPDATE devices SET access_token = $2 WHERE id = $1")
                .bind(id.to_string())
                .bind(token)
                .execute(pool)
                .await;
            match r {
                Err(e) if is_unique_violation(&e) => {
                    Err(RuleError::NameTaken { what: "access token", value: token.to_owned() }.into())
                }
                Err(e) => Err(e.into()),
                Ok(done) if done.rows_affected() == 0 => Err(not_found("device", id)),
                Ok(_) => Ok(()),
            }
        })
    }

    async fn device(&self, id: DeviceId) -> Result<Device, StoreError> {
        with_pool!(read self, |pool| fetch_device!(pool, id, ""))
    }

    async fn device_by_token(&self, token: &str) -> Result<Option<Device>, StoreError> {
        with_pool!(read self, |pool| {
            sqlx::query_as::<_, DeviceRow>(sqlf!("SELECT {DEVICE_COLS} FROM devices WHERE access_token = $1"))
                .bind(token)
                .fetch_optional(pool)
                .await?
                .map(DeviceRow::into_model)
                .transpose()
        })
    }

    async fn devices(&self) -> Result<Vec<Device>, StoreError> {
        with_pool!(read self, |pool| {
            sqlx::query_as::<_, DeviceRow>(sqlf!("SELECT {DEVICE_COLS} FROM devices ORDER BY name"))
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(DeviceRow::into_model)
                .collect()
        })
    }

    async fn delete_device(&self, id: DeviceId) -> Result<(), StoreError> {
        with_pool!(write self, |pool| {
            let mut tx = pool.begin_write().await?;
            sqlx::query("DELETE FROM device_update_states WHERE device_id = $1").bind(id.to_string()).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM device_client_attributes WHERE device_id = $1").bind(id.to_string()).execute(&mut *tx).await?;
            let done = sqlx::query("DELETE FROM devices WHERE id = $1").bind(id.to_string()).execute(&mut *tx).await?;
            if done.rows_affected() == 0 {
                return Err(not_found("device", id));
            }
            tx.commit().await?;
            Ok(())
        })
    }

    async fn create_package(&self, p: &OtaPackage) -> Result<(), StoreError> {
        let (url, alg, checksum) = match &p.source {
            PackageSource::Url(u) => (
                Some(u.url.clone()),
                u.checksum_algorithm,
                u.checksum.clone(),
            ),
            PackageSource::Pending => (None, None, None),
            PackageSource::Data(_) => return Err(RuleError::DataImmutable { package: p.id }.into()),
        };
        let info = p.additional_info.as_ref().map(serde_json::Value::to_string);
        with_pool!(write self, |pool| {
            let mut tx = pool.begin_write().await?;
            let _: DeviceProfile = fetch_profile!(&mut *tx, p.profile_id, self.share_clause())?;
            let r = sqlx::query(sqlf!(
                "INSERT INTO ota_packages ({PACKAGE_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,NULL,NULL,$9,$10,NULL,NULL,$11,$12)"
            ))
            .bind(p.id.to_string())
            .bind(p.created_time)
            .bind(p.profile_id.to_string())
            .bind(p.package_type.as_str())
            .bind(&p.title)
            .bind(&p.version)
            .bind(&p.tag)
            .bind(&url)
            .bind(alg.map(ChecksumAlgorithm::tb_name))
            .bind(&checksum)
            .bind(&p.sming_app_id)
            .bind(&info)
            .execute(&mut *tx)
            .await;
            match r {
                Err(e) if is_unique_violation(&e) => {
                    return Err(RuleError::Duplicate { title: p.title.clone(), version: p.version.clone() }.into());
                }
                r => {
                    r?;
                }
            }
            tx.commit().await?;
            Ok(())
        })
    }

    async fn package(&self, id: PackageId) -> Result<OtaPackage, StoreError> {
        with_pool!(read self, |pool| fetch_package!(pool, id, ""))
    }

    async fn packages(&self, q: &PackageQuery) -> Result<Page<OtaPackage>, StoreError> {
        let mut conds: Vec<String> = Vec::new();
        let mut binds: Vec<String> = Vec::new();
        if let Some(text) = q.text_search.as_deref().filter(|t| !t.is_empty()) {
            let escaped = text
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            binds.push(format!("%{escaped}%"));
            conds.push(format!("LOWER(title) LIKE ${} ESCAPE '\\'", binds.len()));
        }
        if let Some(profile) = q.profile_id {
            binds.push(profile.to_string());
            conds.push(format!("device_profile_id = ${}", binds.len()));
        }
        if let Some(t) = q.package_type {
            binds.push(t.as_str().to_owned());
            conds.push(format!("package_type = ${}", binds.len()));
        }
        if q.with_data_only {
            conds.push("(blob_key IS NOT NULL OR url IS NOT NULL)".to_owned());
        }
        let filter = if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        };
        let order = if q.descending { "DESC" } else { "ASC" };
        let page_size = q.page_size.max(1);
        let offset = i64::from(q.page) * i64::from(page_size);
        let data_sql = format!(
            "SELECT {PACKAGE_COLS} FROM ota_packages{filter} ORDER BY {} {order}, id {order} LIMIT {page_size} OFFSET {offset}",
            q.sort.column()
        );
        let count_sql = format!("SELECT COUNT(*) FROM ota_packages{filter}");
        let (rows, total) = with_pool!(read self, |pool| {
            let mut data = sqlx::query_as::<_, PackageRow>(sqlx::AssertSqlSafe(data_sql.clone()));
            let mut count = sqlx::query_as::<_, (i64,)>(sqlx::AssertSqlSafe(count_sql.clone()));
            for b in &binds {
                data = data.bind(b);
                count = count.bind(b);
            }
            (data.fetch_all(pool).await?, count.fetch_one(pool).await?.0)
        });
        let data = rows
            .into_iter()
            .map(PackageRow::into_model)
            .collect::<Result<Vec<_>, _>>()?;
        let total_elements = to_u64(total);
        let total_pages = total_elements.div_ceil(u64::from(page_size));
        Ok(Page {
            data,
            total_elements,
            total_pages,
            has_next: u64::from(q.page) + 1 < total_pages,
        })
    }

    async fn set_package_data(&self, id: PackageId, d: &PackageData) -> Result<(), StoreError> {
        with_pool!(write self, |pool| {
            let mut tx = pool.begin_write().await?;
            let done = sqlx::query(
                "UPDATE ota_packages SET file_name = $2, content_type = $3, checksum_algorithm = $4, checksum = $5, \
                 data_size = $6, blob_key = $7 WHERE id = $1 AND blob_key IS NULL AND url IS NULL",
            )
            .bind(id.to_string())
            .bind(&d.file_name)
            .bind(&d.content_type)
            .bind(d.checksum_algorithm.tb_name())
            .bind(&d.checksum)
            .bind(to_i64(d.size))
            .bind(&d.blob_key)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                let _: OtaPackage = fetch_package!(&mut *tx, id, "")?;
                return Err(RuleError::DataImmutable { package: id }.into());
            }
            tx.commit().await?;
            Ok(())
        })
    }

    async fn delete_package(&self, id: PackageId) -> Result<Option<String>, StoreError> {
        with_pool!(write self, |pool| {
            let mut tx = pool.begin_write().await?;
            let pkg: OtaPackage = fetch_package!(&mut *tx, id, self.lock_clause())?;
            let (uses,): (i64,) = sqlx::query_as(
                "SELECT (SELECT COUNT(*) FROM devices WHERE firmware_id = $1 OR software_id = $1) + \
                 (SELECT COUNT(*) FROM device_profiles WHERE firmware_id = $1 OR software_id = $1)",
            )
            .bind(id.to_string())
            .fetch_one(&mut *tx)
            .await?;
            if uses > 0 {
                return Err(RuleError::InUse { package: id }.into());
            }
            sqlx::query("DELETE FROM ota_packages WHERE id = $1").bind(id.to_string()).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(pkg.data().map(|d| d.blob_key.clone()))
        })
    }

    async fn blob_keys(&self) -> Result<Vec<String>, StoreError> {
        with_pool!(read self, |pool| {
            let rows: Vec<(String,)> =
                sqlx::query_as("SELECT blob_key FROM ota_packages WHERE blob_key IS NOT NULL").fetch_all(pool).await?;
            Ok(rows.into_iter().map(|(k,)| k).collect())
        })
    }

    async fn update_state(
        &self,
        device: DeviceId,
        t: PackageType,
    ) -> Result<DeviceUpdateState, StoreError> {
        with_pool!(read self, |pool| Ok(fetch_state!(pool, device, t)))
    }

    async fn put_update_state(&self, state: &DeviceUpdateState) -> Result<(), StoreError> {
        with_pool!(write self, |pool| {
            upsert_state!(pool, state);
            Ok(())
        })
    }

    async fn put_update_state_if(
        &self,
        s: &DeviceUpdateState,
        expected_state_time: Millis,
    ) -> Result<bool, StoreError> {
        with_pool!(write self, |pool| {
            let done = bind_state!(
                sqlx::query(
                    "UPDATE device_update_states SET current_title = $3, current_version = $4, \
                 target_package_id = $5, target_title = $6, target_version = $7, state = $8, error = $9, \
                 progress = $10, state_time = $11, anomalies = $12 \
                 WHERE device_id = $1 AND package_type = $2 AND state_time = $13",
                ),
                s
            )
            .bind(expected_state_time)
            .execute(pool)
            .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    async fn set_progress(
        &self,
        device: DeviceId,
        t: PackageType,
        progress: u64,
    ) -> Result<(), StoreError> {
        with_pool!(write self, |pool| {
            sqlx::query(
                "UPDATE device_update_states SET progress = $3 \
                 WHERE device_id = $1 AND package_type = $2 AND progress <> $3",
            )
            .bind(device.to_string())
            .bind(t.as_str())
            .bind(to_i64(progress))
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    async fn update_states(&self) -> Result<Vec<DeviceUpdateState>, StoreError> {
        with_pool!(read self, |pool| {
            sqlx::query_as::<_, StateRow>(sqlf!("SELECT {STATE_COLS} FROM device_update_states ORDER BY device_id, package_type"))
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(StateRow::into_model)
                .collect()
        })
    }

    async fn merge_client_attributes(
        &self,
        device: DeviceId,
        attributes: &Map<String, Value>,
        max_keys: usize,
        now: Millis,
    ) -> Result<(), StoreError> {
        with_pool!(write self, |pool| {
            let mut tx = pool.begin_write().await?;
            // Locking the device row serialises merges into one device on PostgreSQL, so the
            // key count checked below is the count written (SQLite has one writer anyway).
            let _: Device = fetch_device!(&mut *tx, device, self.lock_clause())?;
            let existing: Vec<(String,)> =
                sqlx::query_as("SELECT attr_key FROM device_client_attributes WHERE device_id = $1")
                    .bind(device.to_string())
                    .fetch_all(&mut *tx)
                    .await?;
            let added = attributes.keys().filter(|k| !existing.iter().any(|(e,)| e == *k)).count();
            let count = existing.len() + added;
            if count > max_keys {
                return Err(RuleError::TooManyAttributes { count, max: max_keys }.into());
            }
            for (key, value) in attributes {
                sqlx::query(
                    "INSERT INTO device_client_attributes (device_id, attr_key, json_value, last_update_ts) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (device_id, attr_key) \
                     DO UPDATE SET json_value = excluded.json_value, last_update_ts = excluded.last_update_ts",
                )
                .bind(device.to_string())
                .bind(key)
                .bind(value.to_string())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    async fn client_attributes(
        &self,
        device: DeviceId,
        keys: Option<&[String]>,
    ) -> Result<Map<String, Value>, StoreError> {
        with_pool!(read self, |pool| {
            let rows: Vec<(String, String)> = sqlx::query_as(
                "SELECT attr_key, json_value FROM device_client_attributes WHERE device_id = $1 ORDER BY attr_key",
            )
            .bind(device.to_string())
            .fetch_all(pool)
            .await?;
            attributes_from_rows(rows, keys)
        })
    }
}

fn attributes_from_rows(
    rows: Vec<(String, String)>,
    keys: Option<&[String]>,
) -> Result<Map<String, Value>, StoreError> {
    rows.into_iter()
        .filter(|(k, _)| keys.is_none_or(|keys| keys.contains(k)))
        .map(|(k, v)| {
            serde_json::from_str(&v)
                .map(|v| (k, v))
                .map_err(|e| corrupt("client attribute")(e.to_string()))
        })
        .collect()
}

fn name_or_token_taken(e: &sqlx::Error, device: &Device) -> StoreError {
    let msg = match e {
        sqlx::Error::Database(d) => d.message().to_owned(),
        _ => String::new(),
    };
    if msg.contains("access_token") {
        RuleError::NameTaken {
            what: "access token",
            value: device.access_token.clone(),
        }
        .into()
    } else {
        RuleError::NameTaken {
            what: "device name",
            value: device.name.clone(),
        }
        .into()
    }
}
