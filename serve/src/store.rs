//! The durable store of `dtest serve`: executions, their input journals, the live-event log and
//! small key/value tables (nodes, load profiles, allocations, settings), all in one
//! SQLite database, `DIR/dtest.sqlite3`.
//!
//! [`Store`] is synchronous, and safe to call from async code: a call runs at once, without
//! waiting for the database's lock, which only another process can hold (nearly always nobody
//! does); one that finds it locked waits for it, up to the busy timeout, under `block_in_place` on
//! a multi-threaded tokio runtime, which hands the worker's other tasks to another thread
//! meanwhile, and so do other calls while it waits. One connection behind a mutex serves every
//! call.
//!
//! Durability: the database runs in WAL mode with `synchronous=NORMAL`, so whatever a call
//! committed survives the process being killed (`kill -9`, a crash); a power loss may lose the
//! last few commits, never the database.
//!
//! Invariants:
//! - one process per data directory: [`Store::open`] takes an exclusive `flock` on
//!   `DIR/dtest.lock` and holds it until the store is dropped;
//! - no method panics on what the database holds: bad UTF-8, NULLs and out-of-range integers come
//!   back as [`StoreError`]s, and a mutex poisoned by a panicking caller is recovered;
//! - event sequence numbers only grow, across restarts too (`AUTOINCREMENT`).

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::{Connection, ErrorCode, OptionalExtension, Row, ToSql, TransactionBehavior, params};

/// The database file inside the data directory.
pub const DB_FILE: &str = "dtest.sqlite3";

/// The lock file inside the data directory: held (`flock`) by the one process using it.
pub const LOCK_FILE: &str = "dtest.lock";

/// The schema version this binary writes and reads (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 1;

/// How many live events are kept: the backlog a reconnecting WebSocket client can resume from.
///
/// The log holds between `EVENTS_KEPT` and `EVENTS_KEPT + EVENTS_TRIM_EVERY - 1` events: the
/// oldest are trimmed every [`EVENTS_TRIM_EVERY`] appends.
pub const EVENTS_KEPT: u64 = 100_000;

/// Every this many appended events, the log is trimmed back to [`EVENTS_KEPT`] (in the append's
/// own transaction).
pub const EVENTS_TRIM_EVERY: u64 = 1_000;

/// How long a write waits for a lock held by another connection before [`StoreError::Busy`].
pub const BUSY_TIMEOUT_MS: u64 = 2_000;

/// The most rows one page of a listing ([`Store::executions`], [`Store::events_after`]) returns;
/// a larger `limit` is lowered to this.
pub const PAGE_MAX: usize = 10_000;

/// The state of an execution that was created but has not started.
pub const STATE_PENDING: &str = "pending";

/// The state of a started execution that has not finished.
pub const STATE_RUNNING: &str = "running";

/// The schema of version 1, created in one transaction on an empty database.
const SCHEMA_V1: &str = "
CREATE TABLE executions (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('scenario', 'load')),
    state TEXT NOT NULL,
    created_ms INTEGER NOT NULL CHECK (created_ms >= 0),
    started_ms INTEGER CHECK (started_ms >= 0),
    finished_ms INTEGER CHECK (finished_ms >= 0),
    seed INTEGER NOT NULL,
    request TEXT NOT NULL,
    setup TEXT,
    report TEXT,
    summary TEXT
) STRICT;
CREATE INDEX executions_history ON executions (created_ms DESC, id DESC);
CREATE INDEX executions_unfinished ON executions (created_ms, id)
    WHERE state IN ('pending', 'running');

CREATE TABLE journal (
    execution TEXT NOT NULL REFERENCES executions (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL CHECK (seq >= 0),
    entry TEXT NOT NULL,
    PRIMARY KEY (execution, seq)
) STRICT, WITHOUT ROWID;

CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    execution TEXT,
    body TEXT NOT NULL
) STRICT;

CREATE TABLE nodes (id TEXT PRIMARY KEY NOT NULL, body TEXT NOT NULL, updated_ms INTEGER NOT NULL)
    STRICT;
CREATE TABLE profiles (name TEXT PRIMARY KEY NOT NULL, body TEXT NOT NULL) STRICT;
CREATE TABLE allocations (id TEXT PRIMARY KEY NOT NULL, body TEXT NOT NULL) STRICT;
CREATE TABLE settings (key TEXT PRIMARY KEY NOT NULL, body TEXT NOT NULL) STRICT;
";

/// The columns of [`ExecutionRow`], in its field order.
const EXECUTION_COLUMNS: &str = "id, name, kind, state, created_ms, started_ms, finished_ms, seed, \
                                 request, setup, report, summary";

/// The columns of [`ExecutionHead`], in its field order.
const HEAD_COLUMNS: &str = "id, name, kind, state, created_ms, started_ms, finished_ms, seed, summary";

/// What went wrong in the store, said so that the user can act on it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The disk is full, or the database reached its size limit.
    #[error("the disk holding {} is full: free space, then retry", .dir.display())]
    Full {
        /// The data directory.
        dir: PathBuf,
    },
    /// Another process holds the data directory or the database.
    #[error(
        "the database {} is locked by another process (is another `dtest serve --data {}` running?)",
        .dir.join(DB_FILE).display(),
        .dir.display()
    )]
    Busy {
        /// The data directory.
        dir: PathBuf,
    },
    /// The database file is damaged, or is not a dtest database.
    #[error(
        "the database {} is corrupt or is not a dtest database: move it away (its history is lost) \
         or use another --data directory",
        .dir.join(DB_FILE).display()
    )]
    Corrupt {
        /// The data directory.
        dir: PathBuf,
    },
    /// The database or its directory cannot be written.
    #[error(
        "the database {} is read-only: give this user write access to it and to {}",
        .dir.join(DB_FILE).display(),
        .dir.display()
    )]
    ReadOnly {
        /// The data directory.
        dir: PathBuf,
    },
    /// The database was written by a newer dtest.
    #[error(
        "the database {} has schema version {found}, newer than version {} that this dtest knows: \
         run a newer dtest, or use another --data directory",
        .dir.join(DB_FILE).display(),
        SCHEMA_VERSION
    )]
    Version {
        /// The data directory.
        dir: PathBuf,
        /// The version found in the database.
        found: i64,
    },
    /// A row that a call needs is not there.
    #[error("{what} {id} is not in the store")]
    NotFound {
        /// What kind of row: "execution", ...
        what: &'static str,
        /// Its key.
        id: String,
    },
    /// A row that a call would create is already there.
    #[error("{what} {id} is already in the store")]
    Exists {
        /// What kind of row: "execution", "journal entry", ...
        what: &'static str,
        /// Its key.
        id: String,
    },
    /// The file system refused: the message names the file and the reason.
    #[error("{0}")]
    Io(String),
    /// Anything else, such as a value in the database that this dtest cannot read.
    #[error("{0}")]
    Other(String),
}

impl StoreError {
    /// A stable, machine-readable code for the API's error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Full { .. } => "storage_full",
            StoreError::Busy { .. } => "storage_busy",
            StoreError::Corrupt { .. } => "storage_corrupt",
            StoreError::ReadOnly { .. } => "storage_read_only",
            StoreError::Version { .. } => "storage_version",
            StoreError::NotFound { .. } => "not_found",
            StoreError::Exists { .. } => "already_exists",
            StoreError::Io(_) => "storage_io",
            StoreError::Other(_) => "storage_error",
        }
    }

    /// Says what a rusqlite error means for the database in `dir`.
    fn from_sqlite(error: rusqlite::Error, dir: &Path) -> StoreError {
        let dir = dir.to_path_buf();
        match error.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => StoreError::Full { dir },
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy { dir },
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StoreError::Corrupt { dir },
            Some(ErrorCode::ReadOnly) => StoreError::ReadOnly { dir },
            Some(
                ErrorCode::CannotOpen
                | ErrorCode::SystemIoFailure
                | ErrorCode::PermissionDenied
                | ErrorCode::NoLargeFileSupport
                | ErrorCode::FileLockingProtocolFailed,
            ) => StoreError::Io(format!("cannot read or write the database {}: {error}", dir.join(DB_FILE).display())),
            _ if is_bad_value(&error) => StoreError::Other(format!(
                "the database {} holds a value this dtest cannot read: {error}",
                dir.join(DB_FILE).display()
            )),
            _ => StoreError::Other(format!("the database {}: {error}", dir.join(DB_FILE).display())),
        }
    }
}

/// Whether `error` is about a stored value of the wrong type, encoding or range.
fn is_bad_value(error: &rusqlite::Error) -> bool {
    matches!(
        error,
        rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::Utf8Error(..)
    )
}

/// The extended result code of a failed constraint, if that is what `error` is.
fn constraint(error: &rusqlite::Error) -> Option<i32> {
    error.sqlite_error().filter(|e| e.code == ErrorCode::ConstraintViolation).map(|e| e.extended_code)
}

/// What an execution runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutionKind {
    /// A scenario: tasks placed on nodes.
    Scenario,
    /// A load test.
    Load,
}

impl ExecutionKind {
    /// The name stored in the database and used by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionKind::Scenario => "scenario",
            ExecutionKind::Load => "load",
        }
    }

    /// The kind named `name`, if there is one.
    pub fn parse(name: &str) -> Option<ExecutionKind> {
        match name {
            "scenario" => Some(ExecutionKind::Scenario),
            "load" => Some(ExecutionKind::Load),
            _ => None,
        }
    }
}

impl ToSql for ExecutionKind {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.as_str()))
    }
}

impl FromSql for ExecutionKind {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        let name = value.as_str()?;
        ExecutionKind::parse(name).ok_or_else(|| FromSqlError::Other(format!("unknown execution kind {name:?}").into()))
    }
}

/// A seed as stored: its two's-complement `i64`, so that every `u64` seed fits an INTEGER column.
struct Seed(u64);

impl ToSql for Seed {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.0.cast_signed()))
    }
}

impl FromSql for Seed {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        Ok(Seed(value.as_i64()?.cast_unsigned()))
    }
}

/// One execution with every column: what [`Store::insert_execution`] writes and
/// [`Store::execution`] and [`Store::unfinished_executions`] read. JSON columns are JSON text,
/// stored as given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutionRow {
    /// Its id, unique.
    pub id: String,
    /// Its name, for people.
    pub name: String,
    /// What it runs.
    pub kind: ExecutionKind,
    /// Its state: [`STATE_PENDING`], [`STATE_RUNNING`], or a finished state the service names.
    pub state: String,
    /// When it was created (ms since the Unix epoch).
    pub created_ms: u64,
    /// When it started, once it has.
    pub started_ms: Option<u64>,
    /// When it finished, once it has.
    pub finished_ms: Option<u64>,
    /// The seed of its random choices.
    pub seed: u64,
    /// The JSON request it was made from.
    pub request: String,
    /// The JSON written once at its start: the nodes it runs on and the like.
    pub setup: Option<String>,
    /// Its JSON report, once finished.
    pub report: Option<String>,
    /// Its small JSON summary (task counts), once finished.
    pub summary: Option<String>,
}

/// One execution as the history lists it: an [`ExecutionRow`] without its three big columns
/// (`request`, `setup`, `report`), which [`Store::execution`] and [`Store::report`] read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutionHead {
    /// Its id.
    pub id: String,
    /// Its name, for people.
    pub name: String,
    /// What it runs.
    pub kind: ExecutionKind,
    /// Its state.
    pub state: String,
    /// When it was created (ms since the Unix epoch).
    pub created_ms: u64,
    /// When it started, once it has.
    pub started_ms: Option<u64>,
    /// When it finished, once it has.
    pub finished_ms: Option<u64>,
    /// The seed of its random choices.
    pub seed: u64,
    /// Its small JSON summary (task counts), once finished.
    pub summary: Option<String>,
}

impl ExecutionRow {
    /// The row without its large columns.
    pub fn head(&self) -> ExecutionHead {
        ExecutionHead {
            id: self.id.clone(),
            name: self.name.clone(),
            kind: self.kind,
            state: self.state.clone(),
            created_ms: self.created_ms,
            started_ms: self.started_ms,
            finished_ms: self.finished_ms,
            seed: self.seed,
            summary: self.summary.clone(),
        }
    }
}

/// One entry of the live-event log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredEvent {
    /// Its sequence number: increasing, never reused, across restarts too.
    pub seq: u64,
    /// When it happened (ms since the Unix epoch).
    pub time_ms: u64,
    /// What kind of event it is.
    pub kind: String,
    /// The execution it is about, if any.
    pub execution: Option<String>,
    /// Its JSON body.
    pub body: String,
}

/// One node of the registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRow {
    /// The node's id.
    pub id: String,
    /// Its JSON description.
    pub body: String,
    /// When it was last written (ms since the Unix epoch).
    pub updated_ms: u64,
}

/// Numbers a test can make smaller; [`Tuning::DEFAULT`] everywhere else.
#[derive(Clone, Copy, Debug)]
struct Tuning {
    /// See [`EVENTS_KEPT`].
    events_kept: i64,
    /// See [`EVENTS_TRIM_EVERY`]; at least 1.
    events_trim_every: i64,
    /// See [`BUSY_TIMEOUT_MS`].
    busy_timeout_ms: u64,
}

impl Tuning {
    /// The documented constants.
    const DEFAULT: Tuning = Tuning {
        events_kept: EVENTS_KEPT as i64,
        events_trim_every: EVENTS_TRIM_EVERY as i64,
        busy_timeout_ms: BUSY_TIMEOUT_MS,
    };
}

/// A key/value table: its name, key column and value columns, all fixed in this file.
struct KvTable {
    /// The table.
    name: &'static str,
    /// Its primary key column.
    key: &'static str,
    /// Its other columns, in the order `put` binds them after the key.
    values: &'static [&'static str],
}

/// The node registry.
const NODES: KvTable = KvTable { name: "nodes", key: "id", values: &["body", "updated_ms"] };
/// Load profiles.
const PROFILES: KvTable = KvTable { name: "profiles", key: "name", values: &["body"] };
/// Allocations.
const ALLOCATIONS: KvTable = KvTable { name: "allocations", key: "id", values: &["body"] };
/// Settings such as alert rules.
const SETTINGS: KvTable = KvTable { name: "settings", key: "key", values: &["body"] };

impl KvTable {
    /// Inserts or replaces a row: `?1` is the key, then the values.
    fn put_sql(&self) -> String {
        let columns = self.values.join(", ");
        let slots: Vec<String> = (2..=self.values.len() + 1).map(|i| format!("?{i}")).collect();
        let updates: Vec<String> = self.values.iter().map(|c| format!("{c} = excluded.{c}")).collect();
        format!(
            "INSERT INTO {} ({}, {columns}) VALUES (?1, {}) ON CONFLICT ({}) DO UPDATE SET {}",
            self.name,
            self.key,
            slots.join(", "),
            self.key,
            updates.join(", ")
        )
    }

    /// Selects the key and values of the row of one key (`?1`).
    fn get_sql(&self) -> String {
        format!("{} WHERE {} = ?1", self.select_sql(), self.key)
    }

    /// Selects the key and values of every row, in key order.
    fn list_sql(&self) -> String {
        format!("{} ORDER BY {}", self.select_sql(), self.key)
    }

    /// Selects the key, then the values.
    fn select_sql(&self) -> String {
        format!("SELECT {}, {} FROM {}", self.key, self.values.join(", "), self.name)
    }

    /// Deletes the row of one key (`?1`).
    fn delete_sql(&self) -> String {
        format!("DELETE FROM {} WHERE {} = ?1", self.name, self.key)
    }
}

/// Counts a call waiting for the database until it is over, panicking or not.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether `error` is the database's lock taken by another connection.
fn busy(error: &rusqlite::Error) -> bool {
    matches!(error.sqlite_error_code(), Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked))
}

/// Runs `f`, which may block, without stalling the async runtime it is called from: on a
/// multi-threaded tokio runtime under `block_in_place` (the worker's other tasks move to another
/// thread meanwhile); elsewhere (a plain thread, a current-thread runtime) as it is.
fn off_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) if runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// The durable store of `dtest serve`: one SQLite connection behind a mutex, and the lock on the
/// data directory. See the module docs.
pub struct Store {
    /// The connection; declared before `lock` so that it closes before the lock is released.
    conn: Mutex<Connection>,
    /// The data directory, for messages.
    dir: PathBuf,
    /// Trim and timeout numbers.
    tuning: Tuning,
    /// Calls waiting for another process's lock on the database, off the runtime.
    waiting: AtomicUsize,
    /// The `flock` on `DIR/dtest.lock`, released on drop; `None` in memory.
    _lock: Option<Flock<File>>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating them if needed) the data directory `dir` and its database
    /// `dir/dtest.sqlite3`, locks the directory against other processes and migrates the schema.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_tuned(dir, Tuning::DEFAULT)
    }

    /// A store in memory, gone when dropped: for tests.
    #[cfg(test)]
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let dir = PathBuf::from(":memory:");
        let tuning = Tuning::DEFAULT;
        let mut conn = Connection::open_in_memory().map_err(|e| StoreError::from_sqlite(e, &dir))?;
        configure(&conn, tuning, &dir)?;
        migrate(&mut conn, &dir)?;
        Ok(Store { conn: Mutex::new(conn), dir, tuning, waiting: AtomicUsize::new(0), _lock: None })
    }

    /// [`Store::open`] with other numbers.
    fn open_tuned(dir: &Path, tuning: Tuning) -> Result<Store, StoreError> {
        fs::create_dir_all(dir).map_err(|e| io_error(e, dir, dir, "cannot create the data directory"))?;
        let lock = lock_dir(dir)?;
        let mut conn = Connection::open(dir.join(DB_FILE)).map_err(|e| StoreError::from_sqlite(e, dir))?;
        configure(&conn, tuning, dir)?;
        migrate(&mut conn, dir)?;
        Ok(Store {
            conn: Mutex::new(conn),
            dir: dir.to_path_buf(),
            tuning,
            waiting: AtomicUsize::new(0),
            _lock: Some(lock),
        })
    }

    /// The connection, also after a caller panicked holding it: every write is one transaction
    /// (rolled back if unfinished), so the connection is sound whatever the panic interrupted.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the connection and says what its error means.
    fn with<T>(&self, f: impl FnMut(&mut Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        self.run(f).map_err(|e| self.error(e))
    }

    /// Runs `f` on the connection, inline if it need not wait, else off the async runtime.
    ///
    /// Inline, `f` runs without waiting for the database's lock, so the connection is only ever
    /// held inline for the microseconds a statement takes, and a call waits for it inline too.
    /// When the database is locked by another process, `f` runs again under [`off_runtime`],
    /// waiting up to the busy timeout; while such a call waits, every other call waits for the
    /// connection off the runtime as well. So `f` must be safe to run twice: one statement or
    /// one transaction (which the lock refused whole), with no effect outside the connection.
    /// Going off the runtime at every call would move a worker to another thread each time, and
    /// every thread that allocates grows the process by an allocator arena of its own (the fuzz
    /// test's service went from 64 MiB to 115 MiB at its peak that way).
    fn run<T>(&self, mut f: impl FnMut(&mut Connection) -> rusqlite::Result<T>) -> rusqlite::Result<T> {
        let waited_for = Duration::from_millis(self.tuning.busy_timeout_ms);
        if self.waiting.load(Ordering::Acquire) == 0 {
            let inline = match self.conn.try_lock() {
                Ok(conn) => Some(conn),
                Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
                // Held: by an inline call for microseconds, unless a call has begun to wait for
                // the database meanwhile.
                Err(TryLockError::WouldBlock) => (self.waiting.load(Ordering::Acquire) == 0).then(|| self.conn()),
            };
            if let Some(mut conn) = inline.filter(|conn| conn.busy_timeout(Duration::ZERO).is_ok()) {
                let done = f(&mut conn);
                // A failure here leaves the timeout at zero, which the waiting path sets again.
                let _ = conn.busy_timeout(waited_for);
                match done {
                    Err(e) if busy(&e) => {}
                    done => return done,
                }
            }
        }
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.waiting);
        off_runtime(|| {
            let mut conn = self.conn();
            conn.busy_timeout(waited_for)?;
            f(&mut conn)
        })
    }

    /// Locks `mutex`, one that its holders hold across calls of this store: inline, unless a
    /// call waits for the database's lock (the holder may be that call, for as long as the busy
    /// timeout), then off the runtime, as the store's own calls then wait.
    pub fn lock_beside<'m, T>(&self, mutex: &'m Mutex<T>) -> MutexGuard<'m, T> {
        let lock = || mutex.lock().unwrap_or_else(PoisonError::into_inner);
        match mutex.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) if self.waiting.load(Ordering::Acquire) == 0 => lock(),
            Err(TryLockError::WouldBlock) => off_runtime(lock),
        }
    }

    /// What `error` means for this store.
    fn error(&self, error: rusqlite::Error) -> StoreError {
        StoreError::from_sqlite(error, &self.dir)
    }

    // Executions.

    /// Records a new execution. [`StoreError::Exists`] if its id is taken.
    pub fn insert_execution(&self, row: &ExecutionRow) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO executions ({EXECUTION_COLUMNS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
        );
        let result = self.run(|conn| {
            conn.execute(
                &sql,
                params![
                    row.id,
                    row.name,
                    row.kind,
                    row.state,
                    row.created_ms,
                    row.started_ms,
                    row.finished_ms,
                    Seed(row.seed),
                    row.request,
                    row.setup,
                    row.report,
                    row.summary
                ],
            )
        });
        match result {
            Ok(_) => Ok(()),
            Err(e) if constraint(&e) == Some(rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY) => {
                Err(StoreError::Exists { what: "execution", id: row.id.clone() })
            }
            Err(e) => Err(self.error(e)),
        }
    }

    /// Records that execution `id` started at `started_ms` on the setup `setup_json` (the nodes it
    /// runs on and the like), replacing any earlier one. Its state is left to
    /// [`Store::set_execution_state`].
    pub fn set_execution_started(&self, id: &str, started_ms: u64, setup_json: &str) -> Result<(), StoreError> {
        let changed = self.with(|c| {
            c.execute(
                "UPDATE executions SET started_ms = ?2, setup = ?3 WHERE id = ?1",
                params![id, started_ms, setup_json],
            )
        })?;
        found(changed, id)
    }

    /// Sets the state of execution `id`.
    pub fn set_execution_state(&self, id: &str, state: &str) -> Result<(), StoreError> {
        let changed = self.with(|c| c.execute("UPDATE executions SET state = ?2 WHERE id = ?1", params![id, state]))?;
        found(changed, id)
    }

    /// Records that execution `id` finished, with its final state, report and summary, and drops
    /// its journal, all in one transaction.
    pub fn finish_execution(
        &self,
        id: &str,
        state: &str,
        finished_ms: u64,
        report_json: Option<&str>,
        summary_json: &str,
    ) -> Result<(), StoreError> {
        let changed = self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let changed = tx.execute(
                "UPDATE executions SET state = ?2, finished_ms = ?3, report = ?4, summary = ?5 \
                 WHERE id = ?1",
                params![id, state, finished_ms, report_json, summary_json],
            )?;
            if changed > 0 {
                tx.execute("DELETE FROM journal WHERE execution = ?1", [id])?;
                tx.commit()?;
            }
            Ok(changed)
        })?;
        found(changed, id)
    }

    /// Execution `id`, every column, if there is one.
    pub fn execution(&self, id: &str) -> Result<Option<ExecutionRow>, StoreError> {
        let sql = format!("SELECT {EXECUTION_COLUMNS} FROM executions WHERE id = ?1");
        self.with(|c| c.query_row(&sql, [id], read_execution).optional())
    }

    /// A page of the history, newest first (by `created_ms`, then `id`): at most `limit` (lowered
    /// to [`PAGE_MAX`]) executions after skipping `offset`, without their big columns.
    pub fn executions(&self, limit: usize, offset: usize) -> Result<Vec<ExecutionHead>, StoreError> {
        let sql = format!(
            "SELECT {HEAD_COLUMNS} FROM executions ORDER BY created_ms DESC, id DESC \
             LIMIT ?1 OFFSET ?2"
        );
        self.with(|c| {
            let mut statement = c.prepare_cached(&sql)?;
            let rows = statement.query_map(params![page(limit), count(offset)], read_head)?;
            rows.collect()
        })
    }

    /// Every execution still pending or running, oldest first: what a restarted service resumes.
    pub fn unfinished_executions(&self) -> Result<Vec<ExecutionRow>, StoreError> {
        let sql = format!(
            "SELECT {EXECUTION_COLUMNS} FROM executions WHERE state IN ('pending', 'running') \
             ORDER BY created_ms, id"
        );
        self.with(|c| {
            let mut statement = c.prepare_cached(&sql)?;
            let rows = statement.query_map([], read_execution)?;
            rows.collect()
        })
    }

    /// The JSON report of execution `id`: `None` if there is no such execution or it has no report
    /// yet.
    pub fn report(&self, id: &str) -> Result<Option<String>, StoreError> {
        let report = self.with(|c| {
            c.query_row("SELECT report FROM executions WHERE id = ?1", [id], |r| r.get::<_, Option<String>>(0))
                .optional()
        })?;
        Ok(report.flatten())
    }

    // The journal.

    /// Appends input `seq` of execution `id` to its write-ahead journal: one INSERT.
    /// [`StoreError::NotFound`] if there is no such execution, [`StoreError::Exists`] if `seq` is
    /// already written.
    pub fn append_journal(&self, id: &str, seq: u64, entry: &str) -> Result<(), StoreError> {
        let result = self.run(|conn| {
            conn.prepare_cached("INSERT INTO journal (execution, seq, entry) VALUES (?1, ?2, ?3)")?
                .execute(params![id, seq, entry])
        });
        match result {
            Ok(_) => Ok(()),
            Err(e) => Err(match constraint(&e) {
                Some(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY) => {
                    StoreError::NotFound { what: "execution", id: id.to_owned() }
                }
                Some(rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY) => {
                    StoreError::Exists { what: "journal entry", id: format!("{id}#{seq}") }
                }
                _ => self.error(e),
            }),
        }
    }

    /// The journal of execution `id`, in `seq` order: empty if it has none.
    pub fn journal(&self, id: &str) -> Result<Vec<(u64, String)>, StoreError> {
        self.with(|c| {
            let mut statement = c.prepare_cached("SELECT seq, entry FROM journal WHERE execution = ?1 ORDER BY seq")?;
            let rows = statement.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
    }

    // The live-event log.

    /// Appends an event and returns its sequence number; every [`EVENTS_TRIM_EVERY`] appends, the
    /// same transaction trims the log to the last [`EVENTS_KEPT`].
    pub fn append_event(
        &self,
        time_ms: u64,
        kind: &str,
        execution: Option<&str>,
        body: &str,
    ) -> Result<u64, StoreError> {
        let Tuning { events_kept, events_trim_every, .. } = self.tuning;
        let seq = self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.prepare_cached("INSERT INTO events (time_ms, kind, execution, body) VALUES (?1, ?2, ?3, ?4)")?
                .execute(params![time_ms, kind, execution, body])?;
            let seq = tx.last_insert_rowid();
            if seq % events_trim_every == 0 && seq > events_kept {
                tx.prepare_cached("DELETE FROM events WHERE seq <= ?1")?.execute([seq - events_kept])?;
            }
            tx.commit()?;
            Ok(seq)
        })?;
        u64::try_from(seq).map_err(|_| self.bad_seq(seq))
    }

    /// At most `limit` (lowered to [`PAGE_MAX`]) events with a sequence number above `after`, in
    /// order.
    pub fn events_after(&self, after: u64, limit: usize) -> Result<Vec<StoredEvent>, StoreError> {
        self.with(|c| {
            let mut statement = c.prepare_cached(
                "SELECT seq, time_ms, kind, execution, body FROM events WHERE seq > ?1 \
                 ORDER BY seq LIMIT ?2",
            )?;
            let rows = statement.query_map(params![seq_param(after), page(limit)], |r| {
                Ok(StoredEvent {
                    seq: r.get(0)?,
                    time_ms: r.get(1)?,
                    kind: r.get(2)?,
                    execution: r.get(3)?,
                    body: r.get(4)?,
                })
            })?;
            rows.collect()
        })
    }

    /// The sequence number of the oldest event kept, if any.
    pub fn first_event_seq(&self) -> Result<Option<u64>, StoreError> {
        self.with(|c| c.query_row("SELECT MIN(seq) FROM events", [], |r| r.get(0)))
    }

    /// The sequence number of the newest event, if any.
    pub fn last_event_seq(&self) -> Result<Option<u64>, StoreError> {
        self.with(|c| c.query_row("SELECT MAX(seq) FROM events", [], |r| r.get(0)))
    }

    /// The error for a sequence number SQLite should never hand out.
    fn bad_seq(&self, seq: i64) -> StoreError {
        StoreError::Other(format!(
            "the database {} handed out the event sequence number {seq}",
            self.dir.join(DB_FILE).display()
        ))
    }

    // Key/value tables.

    /// Inserts or replaces the row whose key is `params[0]`.
    fn kv_put(&self, table: &KvTable, params: &[&dyn ToSql]) -> Result<(), StoreError> {
        self.with(|c| c.prepare_cached(&table.put_sql())?.execute(params))?;
        Ok(())
    }

    /// The row of `key`, read by `read` (columns: the key, then the values).
    fn kv_get<T>(
        &self,
        table: &KvTable,
        key: &str,
        read: fn(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Option<T>, StoreError> {
        self.with(|c| c.prepare_cached(&table.get_sql())?.query_row([key], read).optional())
    }

    /// Every row in key order, read by `read`.
    fn kv_list<T>(&self, table: &KvTable, read: fn(&Row<'_>) -> rusqlite::Result<T>) -> Result<Vec<T>, StoreError> {
        self.with(|c| {
            let mut statement = c.prepare_cached(&table.list_sql())?;
            let rows = statement.query_map([], read)?;
            rows.collect()
        })
    }

    /// Deletes the row of `key`; whether there was one.
    fn kv_delete(&self, table: &KvTable, key: &str) -> Result<bool, StoreError> {
        Ok(self.with(|c| c.prepare_cached(&table.delete_sql())?.execute([key]))? > 0)
    }

    /// Writes node `id` of the registry (JSON `body`), last updated at `updated_ms`.
    pub fn put_node(&self, id: &str, body: &str, updated_ms: u64) -> Result<(), StoreError> {
        self.kv_put(&NODES, &[&id, &body, &updated_ms])
    }

    /// Node `id` of the registry, if there is one.
    pub fn node(&self, id: &str) -> Result<Option<NodeRow>, StoreError> {
        self.kv_get(&NODES, id, read_node)
    }

    /// Every node of the registry, by id.
    pub fn nodes(&self) -> Result<Vec<NodeRow>, StoreError> {
        self.kv_list(&NODES, read_node)
    }

    /// Removes node `id` from the registry; whether it was there.
    pub fn delete_node(&self, id: &str) -> Result<bool, StoreError> {
        self.kv_delete(&NODES, id)
    }

    /// Writes load profile `name` (JSON `body`).
    pub fn put_profile(&self, name: &str, body: &str) -> Result<(), StoreError> {
        self.kv_put(&PROFILES, &[&name, &body])
    }

    /// Load profile `name`, if there is one.
    pub fn profile(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.kv_get(&PROFILES, name, read_body)
    }

    /// Every load profile as (name, JSON body), by name.
    pub fn profiles(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.kv_list(&PROFILES, read_pair)
    }

    /// Removes load profile `name`; whether it was there.
    pub fn delete_profile(&self, name: &str) -> Result<bool, StoreError> {
        self.kv_delete(&PROFILES, name)
    }

    /// Writes allocation `id` (JSON `body`).
    pub fn put_allocation(&self, id: &str, body: &str) -> Result<(), StoreError> {
        self.kv_put(&ALLOCATIONS, &[&id, &body])
    }

    /// Allocation `id`, if there is one.
    pub fn allocation(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.kv_get(&ALLOCATIONS, id, read_body)
    }

    /// Every allocation as (id, JSON body), by id.
    pub fn allocations(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.kv_list(&ALLOCATIONS, read_pair)
    }

    /// Removes allocation `id`; whether it was there.
    pub fn delete_allocation(&self, id: &str) -> Result<bool, StoreError> {
        self.kv_delete(&ALLOCATIONS, id)
    }

    /// Writes setting `key` (JSON `body`), such as the alert rules.
    pub fn put_setting(&self, key: &str, body: &str) -> Result<(), StoreError> {
        self.kv_put(&SETTINGS, &[&key, &body])
    }

    /// Setting `key`, if it is set.
    pub fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.kv_get(&SETTINGS, key, read_body)
    }

    /// Every setting as (key, JSON body), by key.
    pub fn settings(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.kv_list(&SETTINGS, read_pair)
    }

    /// Removes setting `key`; whether it was set.
    pub fn delete_setting(&self, key: &str) -> Result<bool, StoreError> {
        self.kv_delete(&SETTINGS, key)
    }
}

/// Takes the exclusive `flock` on `dir/dtest.lock`, or says who holds it.
fn lock_dir(dir: &Path) -> Result<Flock<File>, StoreError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io_error(e, dir, &path, "cannot open the lock file"))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        if errno == Errno::EWOULDBLOCK {
            StoreError::Busy { dir: dir.to_path_buf() }
        } else {
            StoreError::Io(format!("cannot lock {}: {errno}", path.display()))
        }
    })
}

/// An I/O error on `path` in the data directory `dir`: read-only or full if that is the reason,
/// else the reason.
fn io_error(error: io::Error, dir: &Path, path: &Path, doing: &str) -> StoreError {
    let dir = dir.to_path_buf();
    match error.kind() {
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => StoreError::ReadOnly { dir },
        io::ErrorKind::StorageFull => StoreError::Full { dir },
        _ => StoreError::Io(format!("{doing} {}: {error}", path.display())),
    }
}

/// Sets the connection up: busy timeout first (so the rest waits too), WAL, `synchronous=NORMAL`,
/// foreign keys.
fn configure(conn: &Connection, tuning: Tuning, dir: &Path) -> Result<(), StoreError> {
    let sql = |e| StoreError::from_sqlite(e, dir);
    conn.busy_timeout(Duration::from_millis(tuning.busy_timeout_ms)).map_err(sql)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(sql)?;
    if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
        return Err(StoreError::Other(format!(
            "the database {} cannot use write-ahead logging (journal mode {mode})",
            dir.join(DB_FILE).display()
        )));
    }
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;").map_err(sql)
}

/// Brings the schema to [`SCHEMA_VERSION`]: creates it in an empty database, refuses a newer one
/// and a foreign one.
fn migrate(conn: &mut Connection, dir: &Path) -> Result<(), StoreError> {
    let sql = |e| StoreError::from_sqlite(e, dir);
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(sql)?;
    if found == SCHEMA_VERSION {
        return Ok(());
    }
    if found > SCHEMA_VERSION {
        return Err(StoreError::Version { dir: dir.to_path_buf(), found });
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql)?;
    let tables: i64 = tx.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0)).map_err(sql)?;
    if found != 0 || tables != 0 {
        // Not written by any dtest: a negative version, or tables without a version.
        return Err(StoreError::Corrupt { dir: dir.to_path_buf() });
    }
    tx.execute_batch(SCHEMA_V1).map_err(sql)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION).map_err(sql)?;
    tx.commit().map_err(sql)
}

/// `Ok` if an UPDATE of execution `id` changed a row.
fn found(changed: usize, id: &str) -> Result<(), StoreError> {
    if changed == 0 {
        return Err(StoreError::NotFound { what: "execution", id: id.to_owned() });
    }
    Ok(())
}

/// A page size as SQLite takes it: at most [`PAGE_MAX`].
fn page(limit: usize) -> i64 {
    count(limit.min(PAGE_MAX))
}

/// A count as SQLite takes it (saturating: no count reaches `i64::MAX`).
fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A sequence number as SQLite takes it (saturating: SQLite hands out none above `i64::MAX`).
fn seq_param(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Reads the columns [`EXECUTION_COLUMNS`].
fn read_execution(r: &Row<'_>) -> rusqlite::Result<ExecutionRow> {
    Ok(ExecutionRow {
        id: r.get(0)?,
        name: r.get(1)?,
        kind: r.get(2)?,
        state: r.get(3)?,
        created_ms: r.get(4)?,
        started_ms: r.get(5)?,
        finished_ms: r.get(6)?,
        seed: r.get::<_, Seed>(7)?.0,
        request: r.get(8)?,
        setup: r.get(9)?,
        report: r.get(10)?,
        summary: r.get(11)?,
    })
}

/// Reads the columns [`HEAD_COLUMNS`].
fn read_head(r: &Row<'_>) -> rusqlite::Result<ExecutionHead> {
    Ok(ExecutionHead {
        id: r.get(0)?,
        name: r.get(1)?,
        kind: r.get(2)?,
        state: r.get(3)?,
        created_ms: r.get(4)?,
        started_ms: r.get(5)?,
        finished_ms: r.get(6)?,
        seed: r.get::<_, Seed>(7)?.0,
        summary: r.get(8)?,
    })
}

/// Reads a row of [`NODES`].
fn read_node(r: &Row<'_>) -> rusqlite::Result<NodeRow> {
    Ok(NodeRow { id: r.get(0)?, body: r.get(1)?, updated_ms: r.get(2)? })
}

/// Reads the body of a (key, body) table.
fn read_body(r: &Row<'_>) -> rusqlite::Result<String> {
    r.get(1)
}

/// Reads a row of a (key, body) table.
fn read_pair(r: &Row<'_>) -> rusqlite::Result<(String, String)> {
    Ok((r.get(0)?, r.get(1)?))
}

#[cfg(test)]
mod tests {
    use std::panic::{self, AssertUnwindSafe};
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A fresh directory under the system's temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("dtest-store-{}-{name}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&path);
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// Small numbers, so trimming and busy waits are quick.
    const QUICK: Tuning = Tuning { events_kept: 10, events_trim_every: 5, busy_timeout_ms: 50 };

    fn execution(id: &str, created_ms: u64) -> ExecutionRow {
        ExecutionRow {
            id: id.to_owned(),
            name: format!("run {id}"),
            kind: ExecutionKind::Scenario,
            state: STATE_PENDING.to_owned(),
            created_ms,
            started_ms: None,
            finished_ms: None,
            seed: u64::MAX - 1,
            request: r#"{"scenario":"x"}"#.to_owned(),
            setup: None,
            report: None,
            summary: None,
        }
    }

    #[test]
    fn execution_round_trip_through_its_lifecycle() {
        let store = Store::open_in_memory().unwrap();
        let mut row = execution("e1", 100);
        row.kind = ExecutionKind::Load;
        store.insert_execution(&row).unwrap();
        assert_eq!(store.execution("e1").unwrap(), Some(row.clone()));

        store.set_execution_started("e1", 150, r#"{"nodes":["a"]}"#).unwrap();
        store.set_execution_state("e1", STATE_RUNNING).unwrap();
        store.finish_execution("e1", "passed", 200, Some(r#"{"ok":true}"#), r#"{"tasks":3}"#).unwrap();

        let done = store.execution("e1").unwrap().unwrap();
        assert_eq!(done.state, "passed");
        assert_eq!(done.started_ms, Some(150));
        assert_eq!(done.finished_ms, Some(200));
        assert_eq!(done.setup.as_deref(), Some(r#"{"nodes":["a"]}"#));
        assert_eq!(done.summary.as_deref(), Some(r#"{"tasks":3}"#));
        assert_eq!(done.seed, u64::MAX - 1);
        assert_eq!(store.report("e1").unwrap().as_deref(), Some(r#"{"ok":true}"#));
        assert_eq!(store.execution("nope").unwrap(), None);
        assert_eq!(store.report("nope").unwrap(), None);
    }

    #[test]
    fn execution_errors_name_the_missing_or_taken_id() {
        let store = Store::open_in_memory().unwrap();
        store.insert_execution(&execution("e1", 1)).unwrap();
        let taken = store.insert_execution(&execution("e1", 2)).unwrap_err();
        assert!(matches!(taken, StoreError::Exists { .. }), "{taken:?}");
        assert_eq!(taken.code(), "already_exists");
        for missing in [
            store.set_execution_state("e2", STATE_RUNNING).unwrap_err(),
            store.set_execution_started("e2", 1, "{}").unwrap_err(),
            store.finish_execution("e2", "passed", 1, Some("{}"), "{}").unwrap_err(),
            store.append_journal("e2", 0, "{}").unwrap_err(),
        ] {
            assert!(matches!(missing, StoreError::NotFound { .. }), "{missing:?}");
            assert_eq!(missing.to_string(), "execution e2 is not in the store");
        }
    }

    #[test]
    fn history_is_newest_first_then_by_id_and_pages() {
        let store = Store::open_in_memory().unwrap();
        for (id, created_ms) in [("a", 10), ("c", 30), ("b", 30), ("d", 20)] {
            let mut row = execution(id, created_ms);
            row.summary = Some(format!(r#"{{"id":"{id}"}}"#));
            store.insert_execution(&row).unwrap();
        }
        let ids = |heads: Vec<ExecutionHead>| heads.into_iter().map(|h| h.id).collect::<Vec<_>>();
        assert_eq!(ids(store.executions(10, 0).unwrap()), ["c", "b", "d", "a"]);
        assert_eq!(ids(store.executions(2, 1).unwrap()), ["b", "d"]);
        assert_eq!(ids(store.executions(usize::MAX, usize::MAX).unwrap()), Vec::<String>::new());
        let head = &store.executions(1, 0).unwrap()[0];
        assert_eq!(head.summary.as_deref(), Some(r#"{"id":"c"}"#));
        assert_eq!(head.seed, u64::MAX - 1);
    }

    #[test]
    fn journal_appends_reads_in_order_and_finishing_drops_it() {
        let store = Store::open_in_memory().unwrap();
        store.insert_execution(&execution("e1", 1)).unwrap();
        store.insert_execution(&execution("e2", 2)).unwrap();
        for seq in [2, 0, 1] {
            store.append_journal("e1", seq, &format!("in{seq}")).unwrap();
        }
        store.append_journal("e2", 0, "other").unwrap();
        let again = store.append_journal("e1", 1, "again").unwrap_err();
        assert!(matches!(again, StoreError::Exists { .. }), "{again:?}");

        let expected: Vec<(u64, String)> = (0..3).map(|seq| (seq, format!("in{seq}"))).collect();
        assert_eq!(store.journal("e1").unwrap(), expected);
        assert_eq!(store.journal("e2").unwrap(), [(0, "other".to_owned())]);

        store.finish_execution("e2", "failed", 3, Some("{}"), "{}").unwrap();
        assert_eq!(store.journal("e2").unwrap(), [], "finishing drops the journal");
        assert_eq!(store.report("e2").unwrap().as_deref(), Some("{}"), "and keeps the report");
    }

    #[test]
    fn events_round_trip_in_seq_order() {
        let store = Store::open_in_memory().unwrap();
        assert_eq!(store.first_event_seq().unwrap(), None);
        assert_eq!(store.last_event_seq().unwrap(), None);
        let first = store.append_event(5, "node_up", None, r#"{"node":"a"}"#).unwrap();
        let second = store.append_event(6, "task_done", Some("e1"), "{}").unwrap();
        assert!(second > first);
        let events = store.events_after(0, 10).unwrap();
        assert_eq!(
            events,
            [
                StoredEvent {
                    seq: first,
                    time_ms: 5,
                    kind: "node_up".to_owned(),
                    execution: None,
                    body: r#"{"node":"a"}"#.to_owned(),
                },
                StoredEvent {
                    seq: second,
                    time_ms: 6,
                    kind: "task_done".to_owned(),
                    execution: Some("e1".to_owned()),
                    body: "{}".to_owned(),
                },
            ]
        );
        assert_eq!(store.events_after(first, 10).unwrap().len(), 1);
        assert_eq!(store.events_after(0, 1).unwrap().len(), 1);
        assert_eq!(store.events_after(u64::MAX, 10).unwrap(), []);
        assert_eq!(store.first_event_seq().unwrap(), Some(first));
        assert_eq!(store.last_event_seq().unwrap(), Some(second));
    }

    #[test]
    fn events_are_trimmed_to_the_last_kept_and_seq_continues_after_reopen() {
        let dir = TempDir::new("events");
        {
            let store = Store::open_tuned(&dir.0, QUICK).unwrap();
            for i in 1..=23 {
                assert_eq!(store.append_event(i, "tick", None, "{}").unwrap(), i);
                let kept = store.events_after(0, PAGE_MAX).unwrap().len() as i64;
                assert!(kept < QUICK.events_kept + QUICK.events_trim_every, "{kept} kept");
            }
            // The 20th append trimmed everything up to 20 - 10.
            assert_eq!(store.first_event_seq().unwrap(), Some(11));
            assert_eq!(store.last_event_seq().unwrap(), Some(23));
        }
        let store = Store::open_tuned(&dir.0, QUICK).unwrap();
        assert_eq!(store.append_event(24, "tick", None, "{}").unwrap(), 24);
        assert_eq!(store.append_event(25, "tick", None, "{}").unwrap(), 25);
        let seqs: Vec<u64> = store.events_after(0, PAGE_MAX).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (16..=25).collect::<Vec<_>>());
    }

    #[test]
    fn key_value_tables_round_trip() {
        let store = Store::open_in_memory().unwrap();
        store.put_node("n2", r#"{"cpu":2}"#, 7).unwrap();
        store.put_node("n1", r#"{"cpu":1}"#, 8).unwrap();
        store.put_node("n2", r#"{"cpu":4}"#, 9).unwrap();
        let n2 = NodeRow { id: "n2".to_owned(), body: r#"{"cpu":4}"#.to_owned(), updated_ms: 9 };
        assert_eq!(store.node("n2").unwrap(), Some(n2.clone()));
        assert_eq!(store.nodes().unwrap().len(), 2);
        assert_eq!(store.nodes().unwrap()[1], n2);
        assert!(store.delete_node("n2").unwrap());
        assert!(!store.delete_node("n2").unwrap());
        assert_eq!(store.node("n2").unwrap(), None);

        type Put = fn(&Store, &str, &str) -> Result<(), StoreError>;
        type Get = fn(&Store, &str) -> Result<Option<String>, StoreError>;
        type List = fn(&Store) -> Result<Vec<(String, String)>, StoreError>;
        type Delete = fn(&Store, &str) -> Result<bool, StoreError>;
        let tables: [(Put, Get, List, Delete); 3] = [
            (Store::put_profile, Store::profile, Store::profiles, Store::delete_profile),
            (Store::put_allocation, Store::allocation, Store::allocations, Store::delete_allocation),
            (Store::put_setting, Store::setting, Store::settings, Store::delete_setting),
        ];
        for (put, get, list, delete) in tables {
            put(&store, "b", "1").unwrap();
            put(&store, "a", "2").unwrap();
            put(&store, "b", "3").unwrap();
            assert_eq!(get(&store, "b").unwrap().as_deref(), Some("3"));
            assert_eq!(get(&store, "c").unwrap(), None);
            let all = list(&store).unwrap();
            assert_eq!(all, [("a".to_owned(), "2".to_owned()), ("b".to_owned(), "3".to_owned())]);
            assert!(delete(&store, "a").unwrap());
            assert!(!delete(&store, "a").unwrap());
            assert_eq!(list(&store).unwrap().len(), 1);
        }
    }

    #[test]
    fn everything_survives_reopen_and_unfinished_executions_are_found() {
        let dir = TempDir::new("reopen");
        {
            let store = Store::open(&dir.0).unwrap();
            store.insert_execution(&execution("pending", 1)).unwrap();
            store.insert_execution(&execution("running", 2)).unwrap();
            store.insert_execution(&execution("done", 3)).unwrap();
            store.set_execution_started("running", 5, r#"{"nodes":[]}"#).unwrap();
            store.set_execution_state("running", STATE_RUNNING).unwrap();
            store.append_journal("running", 0, "input0").unwrap();
            store.finish_execution("done", "passed", 9, Some("{}"), "{}").unwrap();
            store.put_setting("alerts", "[]").unwrap();
            // Dropped without finishing: what a kill -9 leaves.
        }
        let store = Store::open(&dir.0).unwrap();
        let unfinished = store.unfinished_executions().unwrap();
        let ids: Vec<&str> = unfinished.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["pending", "running"]);
        assert_eq!(unfinished[1].setup.as_deref(), Some(r#"{"nodes":[]}"#));
        assert_eq!(unfinished[1].request, r#"{"scenario":"x"}"#);
        assert_eq!(store.journal("running").unwrap(), [(0, "input0".to_owned())]);
        assert_eq!(store.setting("alerts").unwrap().as_deref(), Some("[]"));
    }

    #[test]
    fn a_full_disk_is_a_clear_error() {
        let dir = TempDir::new("full");
        let store = Store::open(&dir.0).unwrap();
        {
            let conn = store.conn();
            let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
            conn.pragma_update(None, "max_page_count", pages + 4).unwrap();
        }
        let body = "x".repeat(2_000);
        let error = (0..10_000)
            .find_map(|i| store.append_event(i, "tick", None, &body).err())
            .expect("the size limit is reached within 10,000 appends");
        assert!(matches!(error, StoreError::Full { .. }), "{error:?}");
        assert_eq!(error.code(), "storage_full");
        assert_eq!(error.to_string(), format!("the disk holding {} is full: free space, then retry", dir.0.display()));
        // Reads still work, and so does a write once there is room.
        assert!(store.last_event_seq().unwrap().is_some());
        store.conn().pragma_update(None, "max_page_count", 1_000_000).unwrap();
        store.append_event(0, "tick", None, &body).unwrap();
    }

    #[test]
    fn a_second_store_on_the_same_dir_is_busy() {
        let dir = TempDir::new("second");
        let first = Store::open(&dir.0).unwrap();
        let error = Store::open(&dir.0).unwrap_err();
        assert!(matches!(error, StoreError::Busy { .. }), "{error:?}");
        assert_eq!(error.code(), "storage_busy");
        let message = error.to_string();
        assert!(message.contains(&format!("--data {}", dir.0.display())), "{message}");
        drop(first);
        Store::open(&dir.0).expect("the lock is released on drop");
    }

    #[test]
    fn a_write_waits_for_a_lock_then_is_busy() {
        let dir = TempDir::new("locked");
        let store = Store::open_tuned(&dir.0, QUICK).unwrap();
        let other = Connection::open(dir.0.join(DB_FILE)).unwrap();
        other.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let error = store.put_setting("k", "{}").unwrap_err();
        assert!(matches!(error, StoreError::Busy { .. }), "{error:?}");
        assert!(error.to_string().contains(&dir.0.join(DB_FILE).display().to_string()));
        other.execute_batch("ROLLBACK").unwrap();
        store.put_setting("k", "{}").unwrap();
        assert_eq!(store.waiting.load(Ordering::Acquire), 0);
    }

    #[test]
    fn a_write_that_finds_the_database_locked_waits_for_it_and_then_succeeds() {
        let dir = TempDir::new("released");
        let tuning = Tuning { busy_timeout_ms: 10_000, ..QUICK };
        let store = Store::open_tuned(&dir.0, tuning).unwrap();
        let other = Connection::open(dir.0.join(DB_FILE)).unwrap();
        other.execute_batch("BEGIN EXCLUSIVE").unwrap();
        let (locked, released) = std::sync::mpsc::channel();
        let holder = std::thread::spawn(move || {
            // Released once the write has begun to wait for it (or after 5 s at most).
            let _ = released.recv_timeout(Duration::from_secs(5));
            other.execute_batch("COMMIT").unwrap();
        });
        let watcher = std::thread::scope(|scope| {
            let waiting = scope.spawn(|| {
                let give_up = std::time::Instant::now() + Duration::from_secs(5);
                while store.waiting.load(Ordering::Acquire) == 0 && std::time::Instant::now() < give_up {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let seen = store.waiting.load(Ordering::Acquire) > 0;
                let _ = locked.send(());
                seen
            });
            store.put_setting("k", "{\"v\":1}").unwrap();
            waiting.join()
        });
        assert!(watcher.unwrap(), "the write was never seen waiting for the lock");
        holder.join().unwrap();
        assert_eq!(store.setting("k").unwrap().as_deref(), Some("{\"v\":1}"));
        assert_eq!(store.waiting.load(Ordering::Acquire), 0);
    }

    #[test]
    fn a_garbage_file_is_corrupt() {
        let dir = TempDir::new("garbage");
        fs::create_dir_all(&dir.0).unwrap();
        fs::write(dir.0.join(DB_FILE), "this is not a database\n".repeat(200)).unwrap();
        let error = Store::open(&dir.0).unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
        assert_eq!(error.code(), "storage_corrupt");
        assert!(error.to_string().contains(&dir.0.join(DB_FILE).display().to_string()));
    }

    #[test]
    fn a_foreign_database_is_refused() {
        let dir = TempDir::new("foreign");
        fs::create_dir_all(&dir.0).unwrap();
        Connection::open(dir.0.join(DB_FILE)).unwrap().execute_batch("CREATE TABLE t (x)").unwrap();
        let error = Store::open(&dir.0).unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error:?}");
    }

    #[test]
    fn a_newer_schema_is_a_version_error() {
        let dir = TempDir::new("newer");
        drop(Store::open(&dir.0).unwrap());
        Connection::open(dir.0.join(DB_FILE)).unwrap().pragma_update(None, "user_version", SCHEMA_VERSION + 1).unwrap();
        let error = Store::open(&dir.0).unwrap_err();
        assert!(matches!(error, StoreError::Version { found: 2, .. }), "{error:?}");
        assert_eq!(error.code(), "storage_version");
        assert!(error.to_string().contains("schema version 2, newer than version 1"), "{error}");
    }

    #[test]
    fn bad_values_in_the_database_are_errors_not_panics() {
        let store = Store::open_in_memory().unwrap();
        store
            .conn()
            .execute_batch(
                "PRAGMA ignore_check_constraints = ON;
                 INSERT INTO profiles VALUES ('utf8', CAST(x'ff00fe' AS TEXT));
                 INSERT INTO nodes VALUES ('negative', '{}', -1);
                 INSERT INTO executions (id, name, kind, state, created_ms, seed, request)
                     VALUES ('negative', 'n', 'scenario', 'pending', -1, 0, '{}');
                 INSERT INTO executions (id, name, kind, state, created_ms, seed, request)
                     VALUES ('kind', 'n', 'other', 'running', 1, 0, '{}');
                 INSERT INTO events (time_ms, kind, body) VALUES (-3, 'x', '{}');",
            )
            .unwrap();
        let errors = [
            store.profile("utf8").unwrap_err(),
            store.profiles().unwrap_err(),
            store.node("negative").unwrap_err(),
            store.execution("negative").unwrap_err(),
            store.execution("kind").unwrap_err(),
            store.executions(10, 0).unwrap_err(),
            store.unfinished_executions().unwrap_err(),
            store.events_after(0, 10).unwrap_err(),
        ];
        for error in errors {
            assert!(matches!(error, StoreError::Other(_)), "{error:?}");
            assert!(error.to_string().contains("holds a value this dtest cannot read"), "{error}");
        }
    }

    #[test]
    fn a_poisoned_mutex_is_recovered() {
        let store = Store::open_in_memory().unwrap();
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            let _guard = store.conn.lock().unwrap();
            panic!("a caller panics holding the connection");
        }));
        assert!(result.is_err());
        assert!(store.conn.is_poisoned());
        store.put_setting("k", "v").unwrap();
        assert_eq!(store.setting("k").unwrap().as_deref(), Some("v"));
    }

    #[test]
    fn a_store_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<Store>();
        shareable::<StoreError>();
    }

    #[test]
    fn every_error_has_a_distinct_code() {
        let dir = PathBuf::from("/data");
        let errors = [
            StoreError::Full { dir: dir.clone() },
            StoreError::Busy { dir: dir.clone() },
            StoreError::Corrupt { dir: dir.clone() },
            StoreError::ReadOnly { dir: dir.clone() },
            StoreError::Version { dir, found: 9 },
            StoreError::NotFound { what: "execution", id: "e".to_owned() },
            StoreError::Exists { what: "execution", id: "e".to_owned() },
            StoreError::Io("io".to_owned()),
            StoreError::Other("other".to_owned()),
        ];
        let mut codes: Vec<&str> = errors.iter().map(StoreError::code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), errors.len());
        assert_eq!(
            errors[1].to_string(),
            "the database /data/dtest.sqlite3 is locked by another process \
             (is another `dtest serve --data /data` running?)"
        );
    }
}
