//! The PostgreSQL index: [`PostgresRepository`], the scale-out implementation of
//! [`Repository`] (`db = "postgres://user@host/dbname"`).
//!
//! It runs the same schema ([`MIGRATIONS`], which sticks to SQL both engines accept) and the
//! same statements as [`crate::repo::SqliteRepository`], with `$N` parameter markers and
//! PostgreSQL's exact integer types (`SMALLINT` ↔ `i16`, `INTEGER` ↔ `i32`, `BIGINT` ↔
//! `i64`). The client is the synchronous `postgres` crate, like the [`Repository`] trait:
//! one connection for writes and one for reads, each re-established after it drops.
//!
//! Several processors may share one database: every write transaction (and every
//! migration) first takes the transaction-scoped advisory lock [`WRITE_LOCK`], so writes
//! are serialised as SQLite serialises them, and the recomputed interaction rows and the
//! audit ids (`MAX(id) + 1`) stay consistent. Reads never wait for it.

use std::sync::{Mutex, MutexGuard};

use postgres::types::ToSql;
use postgres::{Client, GenericClient, NoTls, Row};

use crate::consolidate::{consolidate, interaction_id_for};
use crate::model::{
    Analysis, AuditEntry, EventRow, IndexCounts, InteractionDetail, InteractionRow, RecordingRow,
    SearchPage, SearchQuery,
};
use crate::repo::{
    order_sql, search_filters, sql_i, sql_u, RepoError, Repository, SqlArg, EVENT_COLS,
    INTERACTION_COLS, MIGRATIONS, RECORDING_COLS,
};

/// The advisory lock key every write transaction takes (`pg_advisory_xact_lock`).
pub const WRITE_LOCK: i64 = 0x6c69_6e65_636f_7264; // "linecord"

/// Whether `db` names a PostgreSQL database (`postgres://…` or `postgresql://…`) rather
/// than a SQLite file.
pub fn is_postgres_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// The PostgreSQL index.
pub struct PostgresRepository {
    config: postgres::Config,
    writer: Mutex<Option<Client>>,
    reader: Mutex<Option<Client>>,
}

impl std::fmt::Debug for PostgresRepository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: show the hosts and database only.
        f.debug_struct("PostgresRepository")
            .field("hosts", &self.config.get_hosts())
            .field("dbname", &self.config.get_dbname())
            .finish()
    }
}

type Param<'a> = &'a (dyn ToSql + Sync);

fn b16(v: bool) -> i16 {
    i16::from(v)
}

fn recording_from_row(r: &Row) -> Result<RecordingRow, postgres::Error> {
    Ok(RecordingRow {
        recording_id: r.try_get(0)?,
        interaction_id: r.try_get(1)?,
        call_id: r.try_get(2)?,
        start_ms: sql_u(r.try_get(3)?),
        end_ms: sql_u(r.try_get(4)?),
        duration_ms: sql_u(r.try_get(5)?),
        status: r.try_get(6)?,
        status_note: r.try_get(7)?,
        switch: r.try_get(8)?,
        caller: r.try_get(9)?,
        callee: r.try_get(10)?,
        dn: r.try_get(11)?,
        metadata: r.try_get(12)?,
        analysis: Analysis {
            talk_ms: [sql_u(r.try_get(13)?), sql_u(r.try_get(14)?)],
            silence_ms: sql_u(r.try_get(15)?),
            overtalk_ms: sql_u(r.try_get(16)?),
            audio_ms: sql_u(r.try_get(17)?),
            packet_loss: [r.try_get(18)?, r.try_get(19)?],
            jitter_ms: [r.try_get(20)?, r.try_get(21)?],
            mos: r.try_get(22)?,
            packets_expected: sql_u(r.try_get(23)?),
            packets_lost: sql_u(r.try_get(24)?),
        },
        storage_key: r.try_get(25)?,
        size_bytes: sql_u(r.try_get(26)?),
        legal_hold: r.try_get::<_, i16>(27)? != 0,
    })
}

fn event_from_row(r: &Row) -> Result<EventRow, postgres::Error> {
    Ok(EventRow {
        event_id: r.try_get(0)?,
        global_call_id: r.try_get(1)?,
        switch: r.try_get(2)?,
        switch_call_id: r.try_get(3)?,
        kind: r.try_get(4)?,
        time_ms: sql_u(r.try_get(5)?),
        seq: sql_u(r.try_get(6)?),
        ng_call_id: r.try_get(7)?,
        recording_id: r.try_get(8)?,
        caller: r.try_get(9)?,
        callee: r.try_get(10)?,
        agent_dn: r.try_get(11)?,
        status_code: r
            .try_get::<_, Option<i32>>(12)?
            .and_then(|c| u16::try_from(c).ok()),
        reason: r.try_get(13)?,
        party_text: r.try_get(14)?,
    })
}

fn interaction_from_row(r: &Row) -> Result<InteractionRow, postgres::Error> {
    let dns: String = r.try_get(6)?;
    Ok(InteractionRow {
        id: r.try_get(0)?,
        start_ms: sql_u(r.try_get(1)?),
        end_ms: r.try_get::<_, Option<i64>>(2)?.map(sql_u),
        duration_ms: sql_u(r.try_get(3)?),
        caller: r.try_get(4)?,
        callee: r.try_get(5)?,
        dns: dns
            .split(',')
            .filter(|d| !d.is_empty())
            .map(str::to_owned)
            .collect(),
        segments: u32::try_from(r.try_get::<_, i32>(7)?).unwrap_or(0),
        recorded_ms: sql_u(r.try_get(8)?),
        mos: r.try_get(9)?,
        packet_loss: r.try_get(10)?,
        legal_hold: r.try_get::<_, i16>(11)? != 0,
        search_text: r.try_get(12)?,
    })
}

fn rows<T>(
    rows: Vec<Row>,
    f: fn(&Row) -> Result<T, postgres::Error>,
) -> Result<Vec<T>, postgres::Error> {
    rows.iter().map(f).collect()
}

fn load_recording(c: &mut impl GenericClient, id: &str) -> Result<Option<RecordingRow>, RepoError> {
    let row = c.query_opt(
        &format!("SELECT {RECORDING_COLS} FROM recordings WHERE recording_id = $1"),
        &[&id],
    )?;
    Ok(row.as_ref().map(recording_from_row).transpose()?)
}

fn events_naming(
    c: &mut impl GenericClient,
    rid: &str,
    call_id: &str,
) -> Result<Vec<EventRow>, RepoError> {
    let r = c.query(
        &format!("SELECT {EVENT_COLS} FROM events WHERE recording_id = $1 OR ng_call_id = $2"),
        &[&rid, &call_id],
    )?;
    Ok(rows(r, event_from_row)?)
}

fn load_interaction_rows(
    c: &mut impl GenericClient,
    id: &str,
) -> Result<(Vec<EventRow>, Vec<RecordingRow>), RepoError> {
    let ev = c.query(
        &format!("SELECT {EVENT_COLS} FROM events WHERE global_call_id = $1"),
        &[&id],
    )?;
    let rec = c.query(
        &format!("SELECT {RECORDING_COLS} FROM recordings WHERE interaction_id = $1"),
        &[&id],
    )?;
    Ok((rows(ev, event_from_row)?, rows(rec, recording_from_row)?))
}

/// Recomputes the interaction `id` from its rows (or removes it if it has none).
fn recompute(c: &mut impl GenericClient, id: &str) -> Result<(), RepoError> {
    let (events, recs) = load_interaction_rows(c, id)?;
    c.execute(
        "DELETE FROM interaction_dns WHERE interaction_id = $1",
        &[&id],
    )?;
    let Some(i) = consolidate(id, &events, &recs) else {
        c.execute("DELETE FROM interactions WHERE id = $1", &[&id])?;
        return Ok(());
    };
    let segments = i32::try_from(i.segments).unwrap_or(i32::MAX);
    c.execute(
        "INSERT INTO interactions (id, start_ms, end_ms, duration_ms, caller, callee, dns, \
         segments, recorded_ms, mos, packet_loss, legal_hold, search_text) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         ON CONFLICT (id) DO UPDATE SET start_ms = excluded.start_ms, \
         end_ms = excluded.end_ms, duration_ms = excluded.duration_ms, \
         caller = excluded.caller, callee = excluded.callee, dns = excluded.dns, \
         segments = excluded.segments, recorded_ms = excluded.recorded_ms, \
         mos = excluded.mos, packet_loss = excluded.packet_loss, \
         legal_hold = excluded.legal_hold, search_text = excluded.search_text",
        &[
            &i.id,
            &sql_i(i.start_ms),
            &i.end_ms.map(sql_i),
            &sql_i(i.duration_ms),
            &i.caller,
            &i.callee,
            &i.dns.join(","),
            &segments,
            &sql_i(i.recorded_ms),
            &i.mos,
            &i.packet_loss,
            &b16(i.legal_hold),
            &i.search_text,
        ],
    )?;
    for dn in &i.dns {
        c.execute(
            "INSERT INTO interaction_dns (interaction_id, dn) VALUES ($1, $2) \
             ON CONFLICT (interaction_id, dn) DO NOTHING",
            &[&id, dn],
        )?;
    }
    Ok(())
}

fn upsert_recording(c: &mut impl GenericClient, r: &RecordingRow) -> Result<(), RepoError> {
    let a = &r.analysis;
    let marks: Vec<String> = (1..=28).map(|n| format!("${n}")).collect();
    c.execute(
        &format!(
            "INSERT INTO recordings ({RECORDING_COLS}) VALUES ({}) \
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
             size_bytes = excluded.size_bytes",
            marks.join(", ")
        ),
        &[
            &r.recording_id,
            &r.interaction_id,
            &r.call_id,
            &sql_i(r.start_ms),
            &sql_i(r.end_ms),
            &sql_i(r.duration_ms),
            &r.status,
            &r.status_note,
            &r.switch,
            &r.caller,
            &r.callee,
            &r.dn,
            &r.metadata,
            &sql_i(a.talk_ms[0]),
            &sql_i(a.talk_ms[1]),
            &sql_i(a.silence_ms),
            &sql_i(a.overtalk_ms),
            &sql_i(a.audio_ms),
            &a.packet_loss[0],
            &a.packet_loss[1],
            &a.jitter_ms[0],
            &a.jitter_ms[1],
            &a.mos,
            &sql_i(a.packets_expected),
            &sql_i(a.packets_lost),
            &r.storage_key,
            &sql_i(r.size_bytes),
            &b16(r.legal_hold),
        ],
    )?;
    Ok(())
}

/// Re-assigns the recordings an event names to the interaction the join rules give now,
/// recomputing the interactions they leave.
fn rejoin_recordings(c: &mut impl GenericClient, ev: &EventRow) -> Result<(), RepoError> {
    let rid = ev.recording_id.as_deref().unwrap_or("");
    let ng = ev.ng_call_id.as_deref().unwrap_or("");
    let found = c.query(
        &format!("SELECT {RECORDING_COLS} FROM recordings WHERE recording_id = $1 OR call_id = $2"),
        &[&rid, &ng],
    )?;
    for r in rows(found, recording_from_row)? {
        let events = events_naming(c, &r.recording_id, &r.call_id)?;
        let iid = interaction_id_for(&r.recording_id, &r.call_id, &events);
        if iid != r.interaction_id {
            c.execute(
                "UPDATE recordings SET interaction_id = $1 WHERE recording_id = $2",
                &[&iid, &r.recording_id],
            )?;
            recompute(c, &r.interaction_id)?;
            recompute(c, &iid)?;
        }
    }
    Ok(())
}

impl PostgresRepository {
    /// Connects to the database named by `url` (`postgres://user:password@host:port/db`,
    /// or key-value form; a Unix socket directory as `host=/run/postgresql`) and migrates
    /// it. TLS is not used: run it on a trusted network or a Unix socket.
    pub fn open(url: &str) -> Result<PostgresRepository, RepoError> {
        let mut config: postgres::Config = url.parse()?;
        if config.get_application_name().is_none() {
            config.application_name("linecord-processor");
        }
        config.connect_timeout(std::time::Duration::from_secs(10));
        let repo = PostgresRepository {
            writer: Mutex::new(Some(config.connect(NoTls)?)),
            reader: Mutex::new(Some(config.connect(NoTls)?)),
            config,
        };
        repo.migrate()?;
        Ok(repo)
    }

    fn lock<'a>(m: &'a Mutex<Option<Client>>) -> Result<MutexGuard<'a, Option<Client>>, RepoError> {
        m.lock().map_err(|_| RepoError::Poisoned)
    }

    /// Runs `f` on the connection in `m`, connecting first if it is missing or closed, and
    /// dropping it if it closed during `f` (the next call reconnects).
    fn with<T>(
        &self,
        m: &Mutex<Option<Client>>,
        f: impl FnOnce(&mut Client) -> Result<T, RepoError>,
    ) -> Result<T, RepoError> {
        let mut guard = Self::lock(m)?;
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = None;
            *guard = Some(self.config.connect(NoTls)?);
        }
        let Some(client) = guard.as_mut() else {
            return Err(RepoError::Poisoned);
        };
        let out = f(client);
        if out.is_err() && client.is_closed() {
            *guard = None;
        }
        out
    }

    fn read<T>(&self, f: impl FnOnce(&mut Client) -> Result<T, RepoError>) -> Result<T, RepoError> {
        self.with(&self.reader, f)
    }

    /// Runs `f` in a write transaction holding [`WRITE_LOCK`], and commits it.
    fn in_tx<T>(
        &self,
        f: impl FnOnce(&mut postgres::Transaction<'_>) -> Result<T, RepoError>,
    ) -> Result<T, RepoError> {
        self.with(&self.writer, |client| {
            let mut tx = client.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])?;
            let out = f(&mut tx)?;
            tx.commit()?;
            Ok(out)
        })
    }
}

impl Repository for PostgresRepository {
    fn migrate(&self) -> Result<i64, RepoError> {
        let supported = MIGRATIONS.len() as i64;
        loop {
            let step = self.in_tx(|tx| {
                tx.batch_execute(
                    "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)",
                )?;
                let current: Option<i64> = tx
                    .query_one("SELECT MAX(version) FROM schema_version", &[])?
                    .try_get(0)?;
                let current = current.unwrap_or(0);
                if current > supported {
                    return Err(RepoError::TooNew {
                        found: current,
                        supported,
                    });
                }
                let Some(step) = MIGRATIONS.get(usize::try_from(current).unwrap_or(usize::MAX))
                else {
                    return Ok(Err(current));
                };
                tx.batch_execute(step)?;
                tx.execute("DELETE FROM schema_version", &[])?;
                tx.execute(
                    "INSERT INTO schema_version (version) VALUES ($1)",
                    &[&(current + 1)],
                )?;
                Ok(Ok(current + 1))
            })?;
            match step {
                Ok(v) => tracing::info!(version = v, "index schema migrated (postgresql)"),
                Err(current) => return Ok(current),
            }
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
            let status_code = ev.status_code.map(i32::from);
            let n = tx.execute(
                &format!(
                    "INSERT INTO events ({EVENT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, \
                     $9, $10, $11, $12, $13, $14, $15) ON CONFLICT (event_id) DO NOTHING"
                ),
                &[
                    &ev.event_id,
                    &ev.global_call_id,
                    &ev.switch,
                    &ev.switch_call_id,
                    &ev.kind,
                    &sql_i(ev.time_ms),
                    &sql_i(ev.seq),
                    &ev.ng_call_id,
                    &ev.recording_id,
                    &ev.caller,
                    &ev.callee,
                    &ev.agent_dn,
                    &status_code,
                    &ev.reason,
                    &ev.party_text,
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
        let mut args: Vec<Box<dyn ToSql + Sync>> = Vec::new();
        for (sql, arg) in search_filters(q) {
            args.push(match arg {
                SqlArg::Int(v) => Box::new(v),
                SqlArg::Real(v) => Box::new(v),
                SqlArg::Text(v) => Box::new(v),
            });
            conds.push(sql.replace('?', &format!("${}", args.len())));
        }
        if let Some(dns) = dn_limit {
            if dns.is_empty() {
                conds.push("1 = 0".into());
            } else {
                args.push(Box::new(dns.to_vec()));
                conds.push(format!(
                    "EXISTS (SELECT 1 FROM interaction_dns a WHERE a.interaction_id = i.id \
                     AND a.dn = ANY(${}))",
                    args.len()
                ));
            }
        }
        let where_sql = if conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conds.join(" AND "))
        };
        let order = order_sql(q.sort);
        let n = args.len();
        let limit = i64::from(q.limit);
        let offset = sql_i(q.offset);
        self.read(|c| {
            let params: Vec<Param<'_>> = args.iter().map(|a| &**a as Param<'_>).collect();
            let total: i64 = c
                .query_one(
                    &format!("SELECT COUNT(*) FROM interactions i {where_sql}"),
                    &params,
                )?
                .try_get(0)?;
            let mut page_params = params.clone();
            page_params.push(&limit);
            page_params.push(&offset);
            let found = c.query(
                &format!(
                    "SELECT {INTERACTION_COLS} FROM interactions i {where_sql} ORDER BY {order} \
                     LIMIT ${} OFFSET ${}",
                    n + 1,
                    n + 2
                ),
                &page_params,
            )?;
            Ok(SearchPage {
                total: sql_u(total),
                items: rows(found, interaction_from_row)?,
            })
        })
    }

    fn interaction(&self, id: &str) -> Result<Option<InteractionDetail>, RepoError> {
        self.read(|c| {
            let Some(row) = c.query_opt(
                &format!("SELECT {INTERACTION_COLS} FROM interactions WHERE id = $1"),
                &[&id],
            )?
            else {
                return Ok(None);
            };
            let interaction = interaction_from_row(&row)?;
            let (events, mut recordings) = load_interaction_rows(c, id)?;
            recordings.sort_by(|a, b| {
                (a.start_ms, a.recording_id.as_str()).cmp(&(b.start_ms, b.recording_id.as_str()))
            });
            Ok(Some(InteractionDetail {
                interaction,
                recordings,
                events: crate::consolidate::timeline(&events),
            }))
        })
    }

    fn recording(
        &self,
        recording_id: &str,
    ) -> Result<Option<(RecordingRow, Vec<String>)>, RepoError> {
        self.read(|c| {
            let Some(rec) = load_recording(c, recording_id)? else {
                return Ok(None);
            };
            let dns = c
                .query(
                    "SELECT dn FROM interaction_dns WHERE interaction_id = $1 ORDER BY dn",
                    &[&rec.interaction_id],
                )?
                .iter()
                .map(|r| r.try_get::<_, String>(0))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Some((rec, dns)))
        })
    }

    fn delete_recording(&self, recording_id: &str) -> Result<Option<RecordingRow>, RepoError> {
        self.in_tx(|tx| {
            let Some(rec) = load_recording(tx, recording_id)? else {
                return Ok(None);
            };
            tx.execute(
                "DELETE FROM recordings WHERE recording_id = $1",
                &[&recording_id],
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
                "UPDATE recordings SET legal_hold = $1 WHERE recording_id = $2",
                &[&b16(hold), &recording_id],
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
        self.read(|c| {
            let found = c.query(
                &format!(
                    "SELECT {RECORDING_COLS} FROM recordings WHERE start_ms < $1 AND \
                     legal_hold = 0 ORDER BY start_ms ASC, recording_id ASC LIMIT $2"
                ),
                &[&sql_i(before_ms), &i64::from(limit)],
            )?;
            Ok(rows(found, recording_from_row)?)
        })
    }

    fn append_audit(&self, e: &AuditEntry) -> Result<(), RepoError> {
        self.in_tx(|tx| {
            tx.execute(
                "INSERT INTO audit (id, time_ms, token_name, role, action, recording_id, \
                 interaction_id) SELECT COALESCE(MAX(id), 0) + 1, $1, $2, $3, $4, $5, $6 \
                 FROM audit",
                &[
                    &sql_i(e.time_ms),
                    &e.token_name,
                    &e.role,
                    &e.action,
                    &e.recording_id,
                    &e.interaction_id,
                ],
            )?;
            Ok(())
        })
    }

    fn audit(&self, limit: u32, offset: u64) -> Result<(u64, Vec<AuditEntry>), RepoError> {
        self.read(|c| {
            let total: i64 = c.query_one("SELECT COUNT(*) FROM audit", &[])?.try_get(0)?;
            let found = c.query(
                "SELECT time_ms, token_name, role, action, recording_id, interaction_id \
                 FROM audit ORDER BY id DESC LIMIT $1 OFFSET $2",
                &[&i64::from(limit), &sql_i(offset)],
            )?;
            let items = found
                .iter()
                .map(|r| {
                    Ok(AuditEntry {
                        time_ms: sql_u(r.try_get(0)?),
                        token_name: r.try_get(1)?,
                        role: r.try_get(2)?,
                        action: r.try_get(3)?,
                        recording_id: r.try_get(4)?,
                        interaction_id: r.try_get(5)?,
                    })
                })
                .collect::<Result<Vec<_>, postgres::Error>>()?;
            Ok((sql_u(total), items))
        })
    }

    fn counts(&self) -> Result<IndexCounts, RepoError> {
        self.read(|c| {
            let mut count = |table: &str| -> Result<u64, RepoError> {
                let n: i64 = c
                    .query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])?
                    .try_get(0)?;
                Ok(sql_u(n))
            };
            Ok(IndexCounts {
                recordings: count("recordings")?,
                interactions: count("interactions")?,
                events: count("events")?,
                audit_entries: count("audit")?,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(is_postgres_url("postgres://u@h/db"));
        assert!(is_postgres_url("postgresql://u@h/db"));
        assert!(!is_postgres_url("/var/lib/linecord/index.sqlite"));
        assert!(PostgresRepository::open("postgres://u@h:notaport/db").is_err());
    }
}
