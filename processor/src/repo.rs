//! The index: a [`Repository`] trait and its SQLite implementation ([`SqliteRepository`]).
//!
//! The trait is what the processor and the API need, in whole operations (each one a
//! transaction), so a PostgreSQL backend can implement it with the same SQL: the schema
//! uses `TEXT`, `BIGINT`, `DOUBLE PRECISION` and `SMALLINT` (booleans as 0/1), upserts are
//! `INSERT … ON CONFLICT (key) DO UPDATE`, searches use `LIKE … ESCAPE '\'` on lower-case
//! text and `ORDER BY (x IS NULL), x` for nullable sort keys. Only the parameter markers
//! (`?N` here, `$N` there) and the connection set-up differ.
//!
//! Migrations: the `schema_version` table holds one row with the version of the schema;
//! [`MIGRATIONS`] lists the steps, applied in order inside a transaction each at start-up.
//! A database newer than this processor is refused.
//!
//! Idempotency: recordings and events are upserted by `recording_id` / `event_id`, and the
//! interaction rows are recomputed from them ([`crate::consolidate::consolidate`]) in the
//! same transaction, so applying a job twice leaves the index as applying it once.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row, Transaction};

use crate::consolidate::{consolidate, interaction_id_for};
use crate::model::{
    Analysis, AuditEntry, EventRow, IndexCounts, InteractionDetail, InteractionRow, RecordingRow,
    SearchPage, SearchQuery, Sort,
};

/// Why the index could not do something.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The database reported an error.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database was migrated by a newer processor.
    #[error("the index has schema version {found}; this processor knows up to {supported}")]
    TooNew {
        /// Version in the database.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// A thread panicked while holding the connection.
    #[error("the database connection was poisoned by a panic")]
    Poisoned,
    /// PostgreSQL reported an error (or the connection failed).
    #[error("postgresql: {0}")]
    Postgres(#[from] postgres::Error),
}

/// The index of recordings, events, interactions and the audit trail.
///
/// Every method is one transaction. Implementations are shared between the job consumer and
/// the API (`Send + Sync`); methods block, so async callers run them on a blocking thread.
pub trait Repository: Send + Sync {
    /// Brings the schema up to date; returns the version now in force.
    fn migrate(&self) -> Result<i64, RepoError>;

    /// Upserts a recording (keyed by `recording_id`; `legal_hold` of an existing row is
    /// kept), assigns it to its interaction ([`interaction_id_for`] over the events that
    /// name it) and recomputes the interactions concerned. Returns the interaction id.
    fn ingest_recording(&self, rec: &RecordingRow) -> Result<String, RepoError>;

    /// Inserts an event unless its `event_id` is known, moves the recordings it names into
    /// its interaction and recomputes the interactions concerned. Returns whether the event
    /// was new.
    fn ingest_event(&self, ev: &EventRow) -> Result<bool, RepoError>;

    /// One page of interactions matching `q`, limited to `dn_limit` (interactions involving
    /// one of these DNs) when given.
    fn search(&self, q: &SearchQuery, dn_limit: Option<&[String]>)
        -> Result<SearchPage, RepoError>;

    /// An interaction with its recordings and events.
    fn interaction(&self, id: &str) -> Result<Option<InteractionDetail>, RepoError>;

    /// A recording and the DNs of its interaction (for access checks).
    fn recording(
        &self,
        recording_id: &str,
    ) -> Result<Option<(RecordingRow, Vec<String>)>, RepoError>;

    /// Removes a recording's row (and its interaction if nothing is left of it); returns
    /// what was removed. The caller removes the file.
    fn delete_recording(&self, recording_id: &str) -> Result<Option<RecordingRow>, RepoError>;

    /// Sets or clears a recording's legal hold; returns the updated row.
    fn set_legal_hold(
        &self,
        recording_id: &str,
        hold: bool,
    ) -> Result<Option<RecordingRow>, RepoError>;

    /// Up to `limit` recordings that started before `before_ms` and are not under legal
    /// hold, oldest first (retention).
    fn expired(&self, before_ms: u64, limit: u32) -> Result<Vec<RecordingRow>, RepoError>;

    /// Appends to the audit trail.
    fn append_audit(&self, entry: &AuditEntry) -> Result<(), RepoError>;

    /// The audit trail, newest first: total and one page.
    fn audit(&self, limit: u32, offset: u64) -> Result<(u64, Vec<AuditEntry>), RepoError>;

    /// Sizes of the index.
    fn counts(&self) -> Result<IndexCounts, RepoError>;
}

/// The schema steps: `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[r"
CREATE TABLE recordings (
    recording_id     TEXT PRIMARY KEY,
    interaction_id   TEXT NOT NULL,
    call_id          TEXT NOT NULL,
    start_ms         BIGINT NOT NULL,
    end_ms           BIGINT NOT NULL,
    duration_ms      BIGINT NOT NULL,
    status           TEXT NOT NULL,
    status_note      TEXT,
    switch_name      TEXT,
    caller           TEXT,
    callee           TEXT,
    dn               TEXT,
    metadata         TEXT,
    talk_a_ms        BIGINT NOT NULL,
    talk_b_ms        BIGINT NOT NULL,
    silence_ms       BIGINT NOT NULL,
    overtalk_ms      BIGINT NOT NULL,
    audio_ms         BIGINT NOT NULL,
    loss_a           DOUBLE PRECISION,
    loss_b           DOUBLE PRECISION,
    jitter_a_ms      DOUBLE PRECISION,
    jitter_b_ms      DOUBLE PRECISION,
    mos              DOUBLE PRECISION,
    packets_expected BIGINT NOT NULL,
    packets_lost     BIGINT NOT NULL,
    storage_key      TEXT,
    size_bytes       BIGINT NOT NULL,
    legal_hold       SMALLINT NOT NULL DEFAULT 0
);
CREATE INDEX recordings_interaction ON recordings (interaction_id);
CREATE INDEX recordings_call ON recordings (call_id);
CREATE INDEX recordings_start ON recordings (start_ms);
CREATE TABLE events (
    event_id       TEXT PRIMARY KEY,
    global_call_id TEXT NOT NULL,
    switch_name    TEXT NOT NULL,
    switch_call_id TEXT NOT NULL,
    kind           TEXT NOT NULL,
    time_ms        BIGINT NOT NULL,
    seq            BIGINT NOT NULL,
    ng_call_id     TEXT,
    recording_id   TEXT,
    caller         TEXT,
    callee         TEXT,
    agent_dn       TEXT,
    status_code    INTEGER,
    reason         TEXT,
    party_text     TEXT NOT NULL
);
CREATE INDEX events_call ON events (global_call_id);
CREATE INDEX events_ng_call ON events (ng_call_id);
CREATE INDEX events_recording ON events (recording_id);
CREATE TABLE interactions (
    id          TEXT PRIMARY KEY,
    start_ms    BIGINT NOT NULL,
    end_ms      BIGINT,
    duration_ms BIGINT NOT NULL,
    caller      TEXT,
    callee      TEXT,
    dns         TEXT NOT NULL,
    segments    INTEGER NOT NULL,
    recorded_ms BIGINT NOT NULL,
    mos         DOUBLE PRECISION,
    packet_loss DOUBLE PRECISION,
    legal_hold  SMALLINT NOT NULL,
    search_text TEXT NOT NULL
);
CREATE INDEX interactions_start ON interactions (start_ms);
CREATE TABLE interaction_dns (
    interaction_id TEXT NOT NULL,
    dn             TEXT NOT NULL,
    PRIMARY KEY (interaction_id, dn)
);
CREATE INDEX interaction_dns_dn ON interaction_dns (dn);
CREATE TABLE audit (
    id             BIGINT PRIMARY KEY,
    time_ms        BIGINT NOT NULL,
    token_name     TEXT NOT NULL,
    role           TEXT NOT NULL,
    action         TEXT NOT NULL,
    recording_id   TEXT NOT NULL,
    interaction_id TEXT
);
"];

/// `u64` as the signed 64-bit integer SQL stores (saturating; times and sizes never get
/// near `i64::MAX`).
pub(crate) fn sql_i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A stored signed integer as `u64` (negative values, which we never write, become 0).
pub(crate) fn sql_u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Escapes `%`, `_` and `\` for `LIKE … ESCAPE '\'` and wraps the text in `%…%`.
pub(crate) fn like_contains(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('%');
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

pub(crate) const RECORDING_COLS: &str = "recording_id, interaction_id, call_id, start_ms, end_ms, \
    duration_ms, status, status_note, switch_name, caller, callee, dn, metadata, talk_a_ms, \
    talk_b_ms, silence_ms, overtalk_ms, audio_ms, loss_a, loss_b, jitter_a_ms, jitter_b_ms, \
    mos, packets_expected, packets_lost, storage_key, size_bytes, legal_hold";

fn recording_from_row(r: &Row<'_>) -> rusqlite::Result<RecordingRow> {
    Ok(RecordingRow {
        recording_id: r.get(0)?,
        interaction_id: r.get(1)?,
        call_id: r.get(2)?,
        start_ms: sql_u(r.get(3)?),
        end_ms: sql_u(r.get(4)?),
        duration_ms: sql_u(r.get(5)?),
        status: r.get(6)?,
        status_note: r.get(7)?,
        switch: r.get(8)?,
        caller: r.get(9)?,
        callee: r.get(10)?,
        dn: r.get(11)?,
        metadata: r.get(12)?,
        analysis: Analysis {
            talk_ms: [sql_u(r.get(13)?), sql_u(r.get(14)?)],
            silence_ms: sql_u(r.get(15)?),
            overtalk_ms: sql_u(r.get(16)?),
            audio_ms: sql_u(r.get(17)?),
            packet_loss: [r.get(18)?, r.get(19)?],
            jitter_ms: [r.get(20)?, r.get(21)?],
            mos: r.get(22)?,
            packets_expected: sql_u(r.get(23)?),
            packets_lost: sql_u(r.get(24)?),
        },
        storage_key: r.get(25)?,
        size_bytes: sql_u(r.get(26)?),
        legal_hold: r.get::<_, i64>(27)? != 0,
    })
}

pub(crate) const EVENT_COLS: &str = "event_id, global_call_id, switch_name, switch_call_id, kind, \
    time_ms, seq, ng_call_id, recording_id, caller, callee, agent_dn, status_code, reason, \
    party_text";

fn event_from_row(r: &Row<'_>) -> rusqlite::Result<EventRow> {
    Ok(EventRow {
        event_id: r.get(0)?,
        global_call_id: r.get(1)?,
        switch: r.get(2)?,
        switch_call_id: r.get(3)?,
        kind: r.get(4)?,
        time_ms: sql_u(r.get(5)?),
        seq: sql_u(r.get(6)?),
        ng_call_id: r.get(7)?,
        recording_id: r.get(8)?,
        caller: r.get(9)?,
        callee: r.get(10)?,
        agent_dn: r.get(11)?,
        status_code: r
            .get::<_, Option<i64>>(12)?
            .and_then(|c| u16::try_from(c).ok()),
        reason: r.get(13)?,
        party_text: r.get(14)?,
    })
}

pub(crate) const INTERACTION_COLS: &str =
    "id, start_ms, end_ms, duration_ms, caller, callee, dns, \
    segments, recorded_ms, mos, packet_loss, legal_hold, search_text";

fn interaction_from_row(r: &Row<'_>) -> rusqlite::Result<InteractionRow> {
    let dns: String = r.get(6)?;
    Ok(InteractionRow {
        id: r.get(0)?,
        start_ms: sql_u(r.get(1)?),
        end_ms: r.get::<_, Option<i64>>(2)?.map(sql_u),
        duration_ms: sql_u(r.get(3)?),
        caller: r.get(4)?,
        callee: r.get(5)?,
        dns: dns
            .split(',')
            .filter(|d| !d.is_empty())
            .map(str::to_owned)
            .collect(),
        segments: u32::try_from(r.get::<_, i64>(7)?).unwrap_or(0),
        recorded_ms: sql_u(r.get(8)?),
        mos: r.get(9)?,
        packet_loss: r.get(10)?,
        legal_hold: r.get::<_, i64>(11)? != 0,
        search_text: r.get(12)?,
    })
}

/// The SQLite index: one file, WAL mode, one connection for writes and one for reads.
pub struct SqliteRepository {
    writer: Mutex<Connection>,
    reader: Mutex<Connection>,
}

impl std::fmt::Debug for SqliteRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SqliteRepository")
    }
}

fn setup(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // WAL: readers do not block the writer; FULL: a committed job survives power loss
    // before the job file is moved to done/.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(())
}

impl SqliteRepository {
    /// Opens (creating if needed) the database file and migrates it.
    pub fn open(path: &Path) -> Result<SqliteRepository, RepoError> {
        let writer = Connection::open(path)?;
        setup(&writer)?;
        let reader = Connection::open(path)?;
        setup(&reader)?;
        let repo = SqliteRepository {
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
        };
        repo.migrate()?;
        Ok(repo)
    }

    /// An in-memory database (tests): one connection serves reads and writes.
    pub fn open_in_memory() -> Result<SqliteRepository, RepoError> {
        // Two connections to one shared in-memory database.
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let name = format!(
            "file:linecord-mem-{}-{}?mode=memory&cache=shared",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let flags = rusqlite::OpenFlags::default() | rusqlite::OpenFlags::SQLITE_OPEN_URI;
        let writer = Connection::open_with_flags(&name, flags)?;
        let reader = Connection::open_with_flags(&name, flags)?;
        writer.busy_timeout(std::time::Duration::from_secs(10))?;
        reader.busy_timeout(std::time::Duration::from_secs(10))?;
        let repo = SqliteRepository {
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
        };
        repo.migrate()?;
        Ok(repo)
    }

    fn write(&self) -> Result<MutexGuard<'_, Connection>, RepoError> {
        self.writer.lock().map_err(|_| RepoError::Poisoned)
    }

    fn read(&self) -> Result<MutexGuard<'_, Connection>, RepoError> {
        self.reader.lock().map_err(|_| RepoError::Poisoned)
    }

    /// Runs `f` in a write transaction and commits it.
    fn in_tx<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, RepoError>,
    ) -> Result<T, RepoError> {
        let mut conn = self.write()?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }
}

fn load_recording(tx: &Connection, id: &str) -> rusqlite::Result<Option<RecordingRow>> {
    tx.query_row(
        &format!("SELECT {RECORDING_COLS} FROM recordings WHERE recording_id = ?1"),
        params![id],
        recording_from_row,
    )
    .optional()
}

fn events_naming(tx: &Connection, rid: &str, call_id: &str) -> rusqlite::Result<Vec<EventRow>> {
    let mut st = tx.prepare_cached(&format!(
        "SELECT {EVENT_COLS} FROM events WHERE recording_id = ?1 OR ng_call_id = ?2"
    ))?;
    let rows = st.query_map(params![rid, call_id], event_from_row)?;
    rows.collect()
}

fn load_interaction_rows(
    c: &Connection,
    id: &str,
) -> rusqlite::Result<(Vec<EventRow>, Vec<RecordingRow>)> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {EVENT_COLS} FROM events WHERE global_call_id = ?1"
    ))?;
    let events = st
        .query_map(params![id], event_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let mut st = c.prepare_cached(&format!(
        "SELECT {RECORDING_COLS} FROM recordings WHERE interaction_id = ?1"
    ))?;
    let recs = st
        .query_map(params![id], recording_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok((events, recs))
}

/// Recomputes the interaction `id` from its rows (or removes it if it has none).
fn recompute(tx: &Connection, id: &str) -> rusqlite::Result<()> {
    let (events, recs) = load_interaction_rows(tx, id)?;
    tx.execute(
        "DELETE FROM interaction_dns WHERE interaction_id = ?1",
        params![id],
    )?;
    let Some(i) = consolidate(id, &events, &recs) else {
        tx.execute("DELETE FROM interactions WHERE id = ?1", params![id])?;
        return Ok(());
    };
    tx.execute(
        "INSERT INTO interactions (id, start_ms, end_ms, duration_ms, caller, callee, dns, \
         segments, recorded_ms, mos, packet_loss, legal_hold, search_text) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
         ON CONFLICT (id) DO UPDATE SET start_ms = excluded.start_ms, \
         end_ms = excluded.end_ms, duration_ms = excluded.duration_ms, \
         caller = excluded.caller, callee = excluded.callee, dns = excluded.dns, \
         segments = excluded.segments, recorded_ms = excluded.recorded_ms, \
         mos = excluded.mos, packet_loss = excluded.packet_loss, \
         legal_hold = excluded.legal_hold, search_text = excluded.search_text",
        params![
            i.id,
            sql_i(i.start_ms),
            i.end_ms.map(sql_i),
            sql_i(i.duration_ms),
            i.caller,
            i.callee,
            i.dns.join(","),
            i64::from(i.segments),
            sql_i(i.recorded_ms),
            i.mos,
            i.packet_loss,
            i64::from(i.legal_hold),
            i.search_text,
        ],
    )?;
    let mut st = tx.prepare_cached(
        "INSERT INTO interaction_dns (interaction_id, dn) VALUES (?1, ?2) \
         ON CONFLICT (interaction_id, dn) DO NOTHING",
    )?;
    for dn in &i.dns {
        st.execute(params![id, dn])?;
    }
    Ok(())
}

fn upsert_recording(tx: &Connection, r: &RecordingRow) -> rusqlite::Result<()> {
    let a = &r.analysis;
    tx.execute(
        &format!(
            "INSERT INTO recordings ({RECORDING_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, \
             ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, \
             ?25, ?26, ?27, ?28) \
             ON CONFLICT (recording_id) DO UPDATE SET interaction_id = excluded.interaction_id, \
             call_id = excluded.call_id, start_ms = excluded.start_ms, end_ms = excluded.end_ms, \
             duration_ms = excluded.duration_ms, status = excluded.status, \
             status_note = excluded.status_note, switch_name = excluded.switch_name, \
             caller = excluded.caller, callee = excluded.callee, dn = excluded.dn, \
             metadata = excluded.metadata, talk_a_ms = excluded.talk_a_ms, \
             talk_b_ms = excluded.talk_b_ms, silence_ms = excluded.silence_ms, \
             overtalk_ms = excluded.overtalk_ms, audio_ms = excluded.audio_ms, \
             loss_a = excluded.loss_a, loss_b = excluded.loss_b, \
             jitter_a_ms = excluded.jitter_a_ms, jitter_b_ms = excluded.jitter_b_ms, \
             mos = excluded.mos, packets_expected = excluded.packets_expected, \
             packets_lost = excluded.packets_lost, storage_key = excluded.storage_key, \
             size_bytes = excluded.size_bytes"
        ),
        params![
            r.recording_id,
            r.interaction_id,
            r.call_id,
            sql_i(r.start_ms),
            sql_i(r.end_ms),
            sql_i(r.duration_ms),
            r.status,
            r.status_note,
            r.switch,
            r.caller,
            r.callee,
            r.dn,
            r.metadata,
            sql_i(a.talk_ms[0]),
            sql_i(a.talk_ms[1]),
            sql_i(a.silence_ms),
            sql_i(a.overtalk_ms),
            sql_i(a.audio_ms),
            a.packet_loss[0],
            a.packet_loss[1],
            a.jitter_ms[0],
            a.jitter_ms[1],
            a.mos,
            sql_i(a.packets_expected),
            sql_i(a.packets_lost),
            r.storage_key,
            sql_i(r.size_bytes),
            i64::from(r.legal_hold),
        ],
    )?;
    Ok(())
}

/// Re-assigns the recordings an event names to the interaction the join rules give now,
/// recomputing the interactions they leave.
fn rejoin_recordings(tx: &Connection, ev: &EventRow) -> rusqlite::Result<()> {
    let mut st = tx.prepare_cached(&format!(
        "SELECT {RECORDING_COLS} FROM recordings WHERE recording_id = ?1 OR call_id = ?2"
    ))?;
    let rid = ev.recording_id.as_deref().unwrap_or("");
    let ng = ev.ng_call_id.as_deref().unwrap_or("");
    let recs = st
        .query_map(params![rid, ng], recording_from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for r in recs {
        let events = events_naming(tx, &r.recording_id, &r.call_id)?;
        let iid = interaction_id_for(&r.recording_id, &r.call_id, &events);
        if iid != r.interaction_id {
            tx.execute(
                "UPDATE recordings SET interaction_id = ?1 WHERE recording_id = ?2",
                params![iid, r.recording_id],
            )?;
            recompute(tx, &r.interaction_id)?;
            recompute(tx, &iid)?;
        }
    }
    Ok(())
}

/// The `ORDER BY` list of a search (the same SQL in SQLite and PostgreSQL).
/// A value bound to a search condition, the same for every SQL backend.
pub(crate) enum SqlArg {
    /// An integer.
    Int(i64),
    /// A float.
    Real(f64),
    /// Text.
    Text(String),
}

/// The WHERE conditions of a search, each with one `?` for its one argument, in order.
/// Backends number the markers and convert the arguments their own way; the agent's DN
/// limit is theirs too (an IN list in SQLite, `= ANY` in PostgreSQL).
pub(crate) fn search_filters(q: &SearchQuery) -> Vec<(&'static str, SqlArg)> {
    let mut f = Vec::new();
    if let Some(v) = q.from_ms {
        f.push(("i.start_ms >= ?", SqlArg::Int(sql_i(v))));
    }
    if let Some(v) = q.to_ms {
        f.push(("i.start_ms <= ?", SqlArg::Int(sql_i(v))));
    }
    if let Some(v) = &q.dn {
        f.push((
            "EXISTS (SELECT 1 FROM interaction_dns d WHERE d.interaction_id = i.id \
             AND d.dn = ?)",
            SqlArg::Text(v.clone()),
        ));
    }
    if let Some(v) = &q.caller {
        f.push((
            "i.caller LIKE ? ESCAPE '\\'",
            SqlArg::Text(like_contains(v)),
        ));
    }
    if let Some(v) = &q.callee {
        f.push((
            "i.callee LIKE ? ESCAPE '\\'",
            SqlArg::Text(like_contains(v)),
        ));
    }
    if let Some(v) = q.min_duration_ms {
        f.push(("i.duration_ms >= ?", SqlArg::Int(sql_i(v))));
    }
    if let Some(v) = q.max_duration_ms {
        f.push(("i.duration_ms <= ?", SqlArg::Int(sql_i(v))));
    }
    if let Some(v) = q.min_mos {
        f.push(("i.mos >= ?", SqlArg::Real(v)));
    }
    if let Some(v) = q.max_mos {
        f.push(("i.mos <= ?", SqlArg::Real(v)));
    }
    if let Some(v) = &q.q {
        f.push((
            "i.search_text LIKE ? ESCAPE '\\'",
            SqlArg::Text(like_contains(&v.to_lowercase())),
        ));
    }
    f
}

pub(crate) fn order_sql(sort: Sort) -> &'static str {
    match sort {
        Sort::StartAsc => "i.start_ms ASC, i.id ASC",
        Sort::StartDesc => "i.start_ms DESC, i.id DESC",
        Sort::DurationAsc => "i.duration_ms ASC, i.start_ms DESC, i.id DESC",
        Sort::DurationDesc => "i.duration_ms DESC, i.start_ms DESC, i.id DESC",
        Sort::MosAsc => "(i.mos IS NULL) ASC, i.mos ASC, i.start_ms DESC, i.id DESC",
        Sort::MosDesc => "(i.mos IS NULL) ASC, i.mos DESC, i.start_ms DESC, i.id DESC",
    }
}

impl Repository for SqliteRepository {
    fn migrate(&self) -> Result<i64, RepoError> {
        let supported = MIGRATIONS.len() as i64;
        let mut conn = self.write()?;
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)",
            [],
        )?;
        loop {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let current: Option<i64> = tx
                .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
                .optional()?
                .flatten();
            let current = current.unwrap_or(0);
            if current > supported {
                return Err(RepoError::TooNew {
                    found: current,
                    supported,
                });
            }
            let Some(step) = MIGRATIONS.get(usize::try_from(current).unwrap_or(usize::MAX)) else {
                tx.commit()?;
                return Ok(current);
            };
            tx.execute_batch(step)?;
            tx.execute("DELETE FROM schema_version", [])?;
            tx.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                params![current + 1],
            )?;
            tx.commit()?;
            tracing::info!(version = current + 1, "index schema migrated");
        }
    }

    fn ingest_recording(&self, rec: &RecordingRow) -> Result<String, RepoError> {
        self.in_tx(|tx| {
            let events = events_naming(tx, &rec.recording_id, &rec.call_id)?;
            let iid = interaction_id_for(&rec.recording_id, &rec.call_id, &events);
            let old = load_recording(tx, &rec.recording_id)?;
            let mut row = rec.clone();
            row.interaction_id = iid.clone();
            row.legal_hold = old.as_ref().is_some_and(|o| o.legal_hold);
            upsert_recording(tx, &row)?;
            if let Some(o) = old.filter(|o| o.interaction_id != iid) {
                recompute(tx, &o.interaction_id)?;
            }
            recompute(tx, &iid)?;
            Ok(iid)
        })
    }

    fn ingest_event(&self, ev: &EventRow) -> Result<bool, RepoError> {
        self.in_tx(|tx| {
            let n = tx.execute(
                &format!(
                    "INSERT INTO events ({EVENT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, \
                     ?9, ?10, ?11, ?12, ?13, ?14, ?15) ON CONFLICT (event_id) DO NOTHING"
                ),
                params![
                    ev.event_id,
                    ev.global_call_id,
                    ev.switch,
                    ev.switch_call_id,
                    ev.kind,
                    sql_i(ev.time_ms),
                    sql_i(ev.seq),
                    ev.ng_call_id,
                    ev.recording_id,
                    ev.caller,
                    ev.callee,
                    ev.agent_dn,
                    ev.status_code.map(i64::from),
                    ev.reason,
                    ev.party_text,
                ],
            )?;
            if n == 0 {
                // Seen before: the transaction that inserted it also did the rest.
                return Ok(false);
            }
            if ev.recording_id.is_some() || ev.ng_call_id.is_some() {
                rejoin_recordings(tx, ev)?;
            }
            recompute(tx, &ev.global_call_id)?;
            Ok(true)
        })
    }

    fn search(
        &self,
        q: &SearchQuery,
        dn_limit: Option<&[String]>,
    ) -> Result<SearchPage, RepoError> {
        let mut conds: Vec<String> = Vec::new();
        let mut args: Vec<Value> = Vec::new();
        for (sql, arg) in search_filters(q) {
            args.push(match arg {
                SqlArg::Int(v) => Value::Integer(v),
                SqlArg::Real(v) => Value::Real(v),
                SqlArg::Text(v) => Value::Text(v),
            });
            conds.push(sql.replace('?', &format!("?{}", args.len())));
        }
        if let Some(dns) = dn_limit {
            if dns.is_empty() {
                conds.push("1 = 0".into());
            } else {
                let mut marks = Vec::new();
                for d in dns {
                    args.push(Value::Text(d.clone()));
                    marks.push(format!("?{}", args.len()));
                }
                conds.push(format!(
                    "EXISTS (SELECT 1 FROM interaction_dns a WHERE a.interaction_id = i.id \
                     AND a.dn IN ({}))",
                    marks.join(", ")
                ));
            }
        }
        let where_sql = if conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conds.join(" AND "))
        };
        let order = order_sql(q.sort);
        let conn = self.read()?;
        let total: i64 = conn.query_row(
            &format!("SELECT COUNT(*) FROM interactions i {where_sql}"),
            params_from_iter(args.iter()),
            |r| r.get(0),
        )?;
        let n = args.len();
        args.push(Value::Integer(i64::from(q.limit)));
        args.push(Value::Integer(sql_i(q.offset)));
        let mut st = conn.prepare(&format!(
            "SELECT {INTERACTION_COLS} FROM interactions i {where_sql} ORDER BY {order} \
             LIMIT ?{} OFFSET ?{}",
            n + 1,
            n + 2
        ))?;
        let items = st
            .query_map(params_from_iter(args.iter()), interaction_from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(SearchPage {
            total: sql_u(total),
            items,
        })
    }

    fn interaction(&self, id: &str) -> Result<Option<InteractionDetail>, RepoError> {
        let conn = self.read()?;
        let Some(interaction) = conn
            .query_row(
                &format!("SELECT {INTERACTION_COLS} FROM interactions WHERE id = ?1"),
                params![id],
                interaction_from_row,
            )
            .optional()?
        else {
            return Ok(None);
        };
        let (events, mut recordings) = load_interaction_rows(&conn, id)?;
        recordings.sort_by(|a, b| {
            (a.start_ms, a.recording_id.as_str()).cmp(&(b.start_ms, b.recording_id.as_str()))
        });
        Ok(Some(InteractionDetail {
            interaction,
            recordings,
            events: crate::consolidate::timeline(&events),
        }))
    }

    fn recording(
        &self,
        recording_id: &str,
    ) -> Result<Option<(RecordingRow, Vec<String>)>, RepoError> {
        let conn = self.read()?;
        let Some(rec) = load_recording(&conn, recording_id)? else {
            return Ok(None);
        };
        let mut st = conn.prepare_cached(
            "SELECT dn FROM interaction_dns WHERE interaction_id = ?1 ORDER BY dn",
        )?;
        let dns = st
            .query_map(params![rec.interaction_id], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(Some((rec, dns)))
    }

    fn delete_recording(&self, recording_id: &str) -> Result<Option<RecordingRow>, RepoError> {
        self.in_tx(|tx| {
            let Some(rec) = load_recording(tx, recording_id)? else {
                return Ok(None);
            };
            tx.execute(
                "DELETE FROM recordings WHERE recording_id = ?1",
                params![recording_id],
            )?;
            recompute(tx, &rec.interaction_id)?;
            Ok(Some(rec))
        })
    }

    fn set_legal_hold(
        &self,
        recording_id: &str,
        hold: bool,
    ) -> Result<Option<RecordingRow>, RepoError> {
        self.in_tx(|tx| {
            let n = tx.execute(
                "UPDATE recordings SET legal_hold = ?1 WHERE recording_id = ?2",
                params![i64::from(hold), recording_id],
            )?;
            if n == 0 {
                return Ok(None);
            }
            let rec = load_recording(tx, recording_id)?;
            if let Some(r) = &rec {
                recompute(tx, &r.interaction_id)?;
            }
            Ok(rec)
        })
    }

    fn expired(&self, before_ms: u64, limit: u32) -> Result<Vec<RecordingRow>, RepoError> {
        let conn = self.read()?;
        let mut st = conn.prepare_cached(&format!(
            "SELECT {RECORDING_COLS} FROM recordings WHERE start_ms < ?1 AND legal_hold = 0 \
             ORDER BY start_ms ASC, recording_id ASC LIMIT ?2"
        ))?;
        let rows = st
            .query_map(
                params![sql_i(before_ms), i64::from(limit)],
                recording_from_row,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    fn append_audit(&self, e: &AuditEntry) -> Result<(), RepoError> {
        self.in_tx(|tx| {
            tx.execute(
                "INSERT INTO audit (id, time_ms, token_name, role, action, recording_id, \
                 interaction_id) SELECT COALESCE(MAX(id), 0) + 1, ?1, ?2, ?3, ?4, ?5, ?6 \
                 FROM audit",
                params![
                    sql_i(e.time_ms),
                    e.token_name,
                    e.role,
                    e.action,
                    e.recording_id,
                    e.interaction_id
                ],
            )?;
            Ok(())
        })
    }

    fn audit(&self, limit: u32, offset: u64) -> Result<(u64, Vec<AuditEntry>), RepoError> {
        let conn = self.read()?;
        let total: i64 = conn.query_row("SELECT COUNT(*) FROM audit", [], |r| r.get(0))?;
        let mut st = conn.prepare_cached(
            "SELECT time_ms, token_name, role, action, recording_id, interaction_id FROM audit \
             ORDER BY id DESC LIMIT ?1 OFFSET ?2",
        )?;
        let items = st
            .query_map(params![i64::from(limit), sql_i(offset)], |r| {
                Ok(AuditEntry {
                    time_ms: sql_u(r.get(0)?),
                    token_name: r.get(1)?,
                    role: r.get(2)?,
                    action: r.get(3)?,
                    recording_id: r.get(4)?,
                    interaction_id: r.get(5)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok((sql_u(total), items))
    }

    fn counts(&self) -> Result<IndexCounts, RepoError> {
        let conn = self.read()?;
        let count = |table: &str| -> rusqlite::Result<u64> {
            conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| {
                r.get::<_, i64>(0)
            })
            .map(sql_u)
        };
        Ok(IndexCounts {
            recordings: count("recordings")?,
            interactions: count("interactions")?,
            events: count("events")?,
            audit_entries: count("audit")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consolidate::tests::{ev, rec};

    fn repo() -> SqliteRepository {
        SqliteRepository::open_in_memory().expect("repo")
    }

    /// A call over two switches with two recordings; the recordings' NG call-id is not the
    /// global id, so they only join through the events.
    fn call() -> (Vec<EventRow>, Vec<RecordingRow>) {
        let mut events = vec![
            ev("e1", "sw1", 0, "created", 1000),
            ev("e2", "sw1", 1, "recording_started", 2000),
            ev("e3", "sw2", 0, "created", 1500),
            ev("e4", "sw2", 1, "released", 9000),
            ev("e5", "sw1", 2, "released", 9500),
        ];
        for e in &mut events {
            e.ng_call_id = Some("ng-1".into());
        }
        let recs = vec![
            rec("r1", "ng-1", 2000, 5000, 4.2),
            rec("r2", "ng-1", 5000, 9000, 3.1),
        ];
        (events, recs)
    }

    enum Item {
        E(EventRow),
        R(RecordingRow),
    }

    fn apply_one(r: &SqliteRepository, i: &Item) {
        match i {
            Item::E(e) => {
                r.ingest_event(e).expect("event");
            }
            Item::R(x) => {
                r.ingest_recording(x).expect("recording");
            }
        }
    }

    fn apply(r: &SqliteRepository, items: &[Item]) {
        for i in items {
            apply_one(r, i);
        }
    }

    fn snapshot(r: &SqliteRepository) -> (SearchPage, InteractionDetail, IndexCounts) {
        let page = r
            .search(
                &SearchQuery {
                    limit: 50,
                    ..SearchQuery::default()
                },
                None,
            )
            .expect("search");
        let d = r.interaction("g1").expect("detail").expect("exists");
        (page, d, r.counts().expect("counts"))
    }

    #[test]
    fn any_arrival_order_with_duplicates_gives_one_interaction() {
        let (events, recs) = call();
        let mut items: Vec<Item> = events.iter().cloned().map(Item::E).collect();
        items.extend(recs.iter().cloned().map(Item::R));
        let base = repo();
        apply(&base, &items);
        let want = snapshot(&base);
        assert_eq!(want.0.total, 1, "{:?}", want.0);
        assert_eq!(want.2.recordings, 2);
        assert_eq!(want.2.events, 5);
        assert_eq!(want.1.interaction.segments, 2);
        assert_eq!(want.1.interaction.dns, ["1001", "2002"]);
        assert_eq!(want.1.recordings[0].interaction_id, "g1");
        let kinds: Vec<&str> = want.1.events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "created",
                "created",
                "recording_started",
                "released",
                "released"
            ]
        );
        // Recordings first (they start under their NG call-id), reversed, and interleaved,
        // every job delivered twice.
        for k in 0..items.len() {
            let r = repo();
            let mut order: Vec<&Item> = items.iter().collect();
            order.rotate_left(k);
            if k % 2 == 1 {
                order.reverse();
            }
            for i in order.iter().chain(order.iter()) {
                apply_one(&r, i);
            }
            let got = snapshot(&r);
            assert_eq!(got, want, "order {k}");
        }
    }

    #[test]
    fn a_recording_without_events_is_its_own_interaction_until_they_come() {
        let r = repo();
        let (events, recs) = call();
        r.ingest_recording(&recs[0]).expect("ingest");
        assert!(r.interaction("ng-1").expect("q").is_some());
        r.ingest_event(&events[1]).expect("event");
        assert!(r.interaction("ng-1").expect("q").is_none(), "moved");
        let d = r.interaction("g1").expect("q").expect("joined");
        assert_eq!(d.recordings.len(), 1);
        assert!(!r.ingest_event(&events[1]).expect("dup"), "duplicate");
    }

    #[test]
    fn search_filters_and_agent_limits() {
        let r = repo();
        let (events, recs) = call();
        apply(
            &r,
            &events
                .into_iter()
                .map(Item::E)
                .chain(recs.into_iter().map(Item::R))
                .collect::<Vec<_>>(),
        );
        let mut other = rec("r3", "ng-9", 100_000, 160_000, 4.4);
        other.dn = Some("3003".into());
        other.caller = Some("+4969000".into());
        other.callee = Some("3003".into());
        other.metadata = Some("caller=+4969000;callee=3003;dn=3003;queue=support".into());
        r.ingest_recording(&other).expect("ingest");
        let q = |f: &dyn Fn(&mut SearchQuery)| {
            let mut s = SearchQuery {
                limit: 50,
                ..SearchQuery::default()
            };
            f(&mut s);
            r.search(&s, None)
                .expect("search")
                .items
                .into_iter()
                .map(|i| i.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(q(&|_| {}), ["ng-9", "g1"], "newest first");
        assert_eq!(q(&|s| s.sort = Sort::StartAsc), ["g1", "ng-9"]);
        assert_eq!(q(&|s| s.dn = Some("3003".into())), ["ng-9"]);
        assert_eq!(q(&|s| s.dn = Some("2002".into())), ["g1"]);
        assert_eq!(q(&|s| s.caller = Some("4969".into())), ["ng-9"]);
        assert_eq!(q(&|s| s.callee = Some("1001".into())), ["g1"]);
        assert_eq!(q(&|s| s.min_duration_ms = Some(60_000)), ["ng-9"]);
        assert_eq!(q(&|s| s.max_duration_ms = Some(59_999)), ["g1"]);
        assert_eq!(q(&|s| s.min_mos = Some(4.0)), ["ng-9"]);
        assert_eq!(q(&|s| s.max_mos = Some(4.0)), ["g1"]);
        assert_eq!(q(&|s| s.q = Some("SUPPORT".into())), ["ng-9"]);
        assert_eq!(q(&|s| s.q = Some("100%".into())), Vec::<String>::new());
        assert_eq!(q(&|s| s.from_ms = Some(50_000)), ["ng-9"]);
        assert_eq!(q(&|s| s.to_ms = Some(50_000)), ["g1"]);
        assert_eq!(q(&|s| s.sort = Sort::MosAsc), ["g1", "ng-9"]);
        assert_eq!(q(&|s| s.sort = Sort::DurationDesc), ["ng-9", "g1"]);
        assert_eq!(
            q(&|s| {
                s.limit = 1;
                s.offset = 1
            }),
            ["g1"]
        );
        let agent = r
            .search(
                &SearchQuery {
                    limit: 50,
                    ..SearchQuery::default()
                },
                Some(&["3003".to_string()]),
            )
            .expect("search");
        assert_eq!(agent.total, 1);
        assert_eq!(agent.items[0].id, "ng-9");
        let nobody = r
            .search(
                &SearchQuery {
                    limit: 50,
                    ..SearchQuery::default()
                },
                Some(&[]),
            )
            .expect("search");
        assert_eq!(nobody.total, 0);
    }

    #[test]
    fn legal_hold_delete_retention_and_audit() {
        let r = repo();
        r.ingest_recording(&rec("r1", "c1", 1000, 2000, 4.0))
            .expect("ingest");
        r.ingest_recording(&rec("r2", "c2", 3000, 4000, 4.0))
            .expect("ingest");
        let held = r.set_legal_hold("r1", true).expect("hold").expect("row");
        assert!(held.legal_hold);
        assert!(
            r.interaction("c1")
                .expect("q")
                .expect("i")
                .interaction
                .legal_hold
        );
        // Re-ingesting keeps the hold.
        r.ingest_recording(&rec("r1", "c1", 1000, 2000, 4.0))
            .expect("ingest");
        assert!(r.recording("r1").expect("q").expect("row").0.legal_hold);
        let expired: Vec<String> = r
            .expired(10_000, 10)
            .expect("expired")
            .into_iter()
            .map(|x| x.recording_id)
            .collect();
        assert_eq!(expired, ["r2"]);
        assert!(r.delete_recording("r2").expect("delete").is_some());
        assert!(r.delete_recording("r2").expect("delete").is_none());
        assert!(r.interaction("c2").expect("q").is_none());
        assert!(r.set_legal_hold("nope", true).expect("hold").is_none());
        for i in 0..3 {
            r.append_audit(&AuditEntry {
                time_ms: i,
                token_name: "t".into(),
                role: "admin".into(),
                action: "delete".into(),
                recording_id: format!("r{i}"),
                interaction_id: None,
            })
            .expect("audit");
        }
        let (total, items) = r.audit(2, 0).expect("audit");
        assert_eq!(total, 3);
        assert_eq!(items[0].recording_id, "r2", "newest first");
        assert_eq!(items.len(), 2);
        assert_eq!(r.migrate().expect("migrate"), MIGRATIONS.len() as i64);
    }
}
