//! The recording processor: queue consumer, consolidation, analysis, storage, index, web
//! API and UI.
//!
//! ```text
//!  spool new/ ──▶ Queue ──▶ ingest::Processor ──▶ Storage (the .lcr, YYYY/MM/DD/<id>.lcr)
//!                                 │                 └▶ Repository (SQLite index)
//!                                 └ analysis (talk, silence, overtalk, loss, jitter, MOS)
//!  HTTP ──▶ api (axum) ──▶ Repository / Storage   (search, detail, audio with Range, audit)
//! ```
//!
//! * [`queue`]: the processor queue ([`queue::Queue`]; spool directory implementation).
//! * [`ingest`]: applies each job exactly once in effect (idempotent upserts, database commit
//!   before the job is completed), fails bad input with a reason, never stops on it.
//! * [`consolidate`] and [`analysis`]: pure functions (no I/O, no clock), unit-tested.
//! * [`storage`], [`repo`]: traits with one implementation each (local directory, SQLite);
//!   object storage and PostgreSQL can implement the same traits.
//! * [`api`]: the HTTP API of `docs/openapi.yaml` and the UI files.
//! * [`retention`]: deletion by age, respecting legal holds, audited.
//!
//! How to run it and what each part does: `docs/processor.md`.

#![warn(missing_docs)]

pub mod access;
pub mod analysis;
pub mod api;
pub mod config;
pub mod consolidate;
pub mod ingest;
pub mod model;
pub mod queue;
pub mod range;
pub mod repo;
pub mod retention;
pub mod storage;
pub mod time;
