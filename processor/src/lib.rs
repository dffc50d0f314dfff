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
//! * [`queue`]: the processor queue ([`queue::Queue`]; spool directory implementation);
//!   [`queue_nats`]: the NATS JetStream implementation and the spool-to-JetStream forwarder.
//! * [`ingest`]: applies each job exactly once in effect (idempotent upserts, database commit
//!   before the job is completed), fails bad input with a reason, never stops on it.
//! * [`consolidate`] and [`analysis`]: pure functions (no I/O, no clock), unit-tested.
//! * [`storage`], [`repo`]: traits with their embedded implementations (local directory,
//!   SQLite); [`storage_object`] (S3-compatible object storage, `file://`) and [`repo_pg`]
//!   (PostgreSQL) are the scale-out ones. [`blocking`]: the private runtime of async clients.
//! * [`api`]: the HTTP API of `docs/openapi.yaml` and the UI files; [`audio`]: WAV
//!   playback generated on the fly for each byte range, within bounds.
//! * [`retention`]: deletion by age, respecting legal holds, audited.
//!
//! How to run it and what each part does: `docs/processor.md`.

#![warn(missing_docs)]

pub mod access;
pub mod analysis;
pub mod api;
pub mod audio;
pub mod blocking;
pub mod config;
pub mod consolidate;
pub mod ingest;
pub mod model;
pub mod queue;
pub mod queue_nats;
pub mod range;
pub mod repo;
pub mod repo_pg;
pub mod retention;
pub mod storage;
pub mod storage_object;
pub mod time;
